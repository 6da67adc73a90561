"""Training detectors with ultralytics' own trainer, on the images a selector picks each epoch.

ultralytics does the training, augmentation, loss and mAP (nothing of it is written again here);
this module decides *which images* each epoch trains on. Before an epoch, the selector's plan is
written as an image list and the trainer's train loader is rebuilt over it (a sampler over the whole
pool is not enough: Mosaic draws its partner images from the whole dataset). After the epoch, for the
selectors that learn from per-image results (DDS and its controls), every trained image is scored with
the current model and the scores go back to the selector. After validation, ``on_epoch`` gets the
epoch's metrics (validation mAP50-95 and mAP50, images processed, where the time went): the runtime
turns that into a Ray Tune report and checkpoint.

Per-image hardness (:func:`thesis_hardness`, the default): for each ground-truth box, the confidence
of the best same-class prediction that overlaps it (IoU >= 0.5), or, if there is none, 0.1 x the
confidence of the best other-class prediction there (0 when nothing overlaps): the classification
rule "confidence x (1 if right else 0.1)" per object. Boxes are averaged within each class and the
classes averaged, so a few large classes do not drown a rare one. An image counts as right (for the
selector's mastery) when at least half of its boxes are found with confidence >= 0.25 (ultralytics'
default for predictions). An image without objects scores 1 - its most confident (false) detection
and is right when no detection reaches 0.25. ``hardness="f1"``
uses the image's F1 at IoU 0.5 of the predictions with confidence >= 0.25 instead (right: F1 >= 0.5).
"""
from __future__ import annotations

import shutil
import time
from copy import copy
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import yaml

from frugalnas.data.yolo_export import YoloExport, write_image_list
from frugalnas.errors import ConfigError
from frugalnas.selection import Selector
from frugalnas.selection.dynamic import WRONG_WEIGHT
from frugalnas.train.yolo_env import prepare_ultralytics

HARDNESS_SCORES = ("thesis", "f1")
#: Confidence threshold of the predictions each hardness score looks at.
HARDNESS_CONF = {"thesis": 0.05, "f1": 0.25}
IOU_MATCH = 0.5
#: A box counts as found (for "right", the selector's mastery) at ultralytics' default predict confidence.
FOUND_CONF = 0.25
#: ultralytics arguments frugalnas sets itself (the rest of its training arguments go in ``train_args``).
RESERVED_ARGS = ("model", "data", "epochs", "imgsz", "batch", "device", "project", "name", "exist_ok", "resume",
                 "seed", "plots", "save", "val", "verbose", "mode", "task", "split", "fraction",
                 "time", "save_dir")


@dataclass
class DetectionSettings:
    """How one detector trains. ``train_args`` are any further ultralytics training arguments
    (``optimizer``, ``lr0``, ``mosaic``, ``nbs``, ...; ultralytics' defaults otherwise)."""

    epochs: int = 10
    batch_size: int = 16
    image_size: int = 640
    seed: int = 0
    hardness: str = "thesis"
    device: str = "cpu"
    train_args: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        if self.hardness not in HARDNESS_SCORES:
            raise ConfigError(f"detection hardness {self.hardness!r} is not one of {', '.join(HARDNESS_SCORES)}")
        check_train_args(self.train_args)


def check_train_args(train_args: dict) -> None:
    """Every key must be an ultralytics training argument that frugalnas does not set itself."""
    prepare_ultralytics()
    from ultralytics.utils import DEFAULT_CFG_KEYS

    reserved = sorted(set(train_args) & set(RESERVED_ARGS))
    if reserved:
        raise ConfigError(f"detection.train_args: {', '.join(reserved)} set by frugalnas (epochs: search.epochs_per_"
                          "candidate / final.epochs, batch: final.batch_size, imgsz: detection.image_size, "
                          "device: resources.gpus_per_trial, seed: seed); remove them")
    unknown = sorted(set(train_args) - set(DEFAULT_CFG_KEYS))
    if unknown:
        raise ConfigError(f"detection.train_args: unknown ultralytics argument(s) {', '.join(unknown)}; see "
                          "https://docs.ultralytics.com/modes/train/#train-settings (e.g. optimizer, lr0, mosaic, nbs)")


@dataclass
class DetectionEpoch:
    """What one training epoch did (``epoch`` is 1-based, as reported)."""

    epoch: int
    map50_95: float
    map50: float
    precision: float
    recall: float
    train_loss: float | None
    images: int  # trained this epoch
    images_processed: int  # trained so far
    subset_updates: int
    train_accuracy: float | None  # fraction of the trained images counted as right (selectors with feedback)
    train_seconds: float  # the training loop
    hardness_seconds: float  # scoring the trained images for the selector
    val_seconds: float  # validation and checkpoint writing
    epoch_seconds: float

    def metrics(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}


# ---------------------------------------------------------------------------------- hardness


def thesis_hardness(gt_cls: torch.Tensor, gt_boxes: torch.Tensor, pred_cls: torch.Tensor, pred_conf: torch.Tensor,
                    pred_boxes: torch.Tensor, iou_threshold: float = IOU_MATCH,
                    found_conf: float = FOUND_CONF) -> tuple[float, bool]:
    """(hardness in [0, 1], right) of one image from its boxes (xyxy, same frame); see the module doc.

    Right: at least half the boxes are found by a same-class prediction of confidence >= ``found_conf``
    (a background image: no prediction reaches it)."""
    top = float(pred_conf.max()) if len(pred_conf) else 0.0
    if len(gt_cls) == 0:  # background image: any confident detection is a mistake
        return 1.0 - top, top < found_conf
    found = torch.zeros(len(gt_cls), dtype=torch.bool)
    score = torch.zeros(len(gt_cls))
    if len(pred_conf):
        from ultralytics.utils.metrics import box_iou

        overlap = box_iou(gt_boxes.float(), pred_boxes.float()) >= iou_threshold  # (boxes, predictions)
        same = gt_cls.view(-1, 1) == pred_cls.view(1, -1)
        conf = pred_conf.float().view(1, -1).expand(len(gt_cls), -1)
        zero = torch.zeros_like(conf)
        right_conf = torch.where(overlap & same, conf, zero).max(1).values
        wrong_conf = torch.where(overlap & ~same, conf, zero).max(1).values
        score = torch.where((overlap & same).any(1), right_conf, WRONG_WEIGHT * wrong_conf)
        found = right_conf >= found_conf
    per_class = [float(score[gt_cls == c].mean()) for c in torch.unique(gt_cls)]
    return float(np.mean(per_class)), bool(found.float().mean() >= 0.5)


def _validator_classes():
    """ultralytics subclasses, defined once ultralytics is set up for offline use."""
    global _CLASSES
    if _CLASSES is None:
        prepare_ultralytics()
        from ultralytics.models.yolo.detect import DetectionTrainer, DetectionValidator

        class HardnessValidator(DetectionValidator):
            """ultralytics' validator over the trained images, also keeping each image's thesis score."""

            def init_metrics(self, model):
                super().init_metrics(model)
                self.image_hardness = {}

            def update_metrics(self, preds, batch):
                super().update_metrics(preds, batch)
                for si, pred in enumerate(preds):
                    pbatch = self._prepare_batch(si, batch)
                    self.image_hardness[Path(pbatch["im_file"]).name] = thesis_hardness(
                        pbatch["cls"].cpu(), pbatch["bboxes"].cpu(), pred["cls"].cpu(), pred["conf"].cpu(),
                        pred["bboxes"].cpu())

        class SubsetDetectionTrainer(DetectionTrainer):
            """ultralytics' detection trainer; ``evaluate_best_at_end`` False skips its closing
            re-validation of best.pt (a candidate reports every epoch already)."""

            evaluate_best_at_end = True

            def final_eval(self):
                if self.evaluate_best_at_end:
                    super().final_eval()

        _CLASSES = {"validator": HardnessValidator, "trainer": SubsetDetectionTrainer}
    return _CLASSES


_CLASSES = None


def score_images(trainer, list_file: Path, hardness: str) -> dict[int, tuple[float, bool]]:
    """Image id -> (hardness, right) for the images in ``list_file``, with the trainer's current
    (EMA) model, through ultralytics' validator (its letterboxing and NMS)."""
    cls = _validator_classes()["validator"]
    args = copy(trainer.args)
    args.conf, args.plots, args.save_json, args.save_txt = HARDNESS_CONF[hardness], False, False, False
    loader = trainer.get_dataloader(str(list_file), batch_size=trainer.batch_size * 2, rank=-1, mode="val")
    validator = cls(loader, save_dir=Path(trainer.save_dir) / "hardness", args=args)
    try:
        validator(trainer=trainer)
    finally:
        if hasattr(loader, "close"):
            loader.close()
    if hardness == "thesis":
        scores = validator.image_hardness
    else:
        scores = {name: (m["f1"], m["f1"] >= 0.5) for name, m in validator.metrics.box.image_metrics.items()}
    return {YoloExport.id_of(name): value for name, value in scores.items()}


# ---------------------------------------------------------------------------------- training


def uses_feedback(selector: Selector) -> bool:
    """Whether the selector learns from per-image results (DDS and its controls do; full and a
    static random subset do not, and their candidates skip the scoring pass)."""
    return getattr(selector, "uses_feedback", True)


class DetectionTraining:
    """One detector trained by ultralytics on the images ``selector`` plans, epoch by epoch.

    ``model`` is an ultralytics model YAML (a fresh start) and ``workdir`` holds the run's image
    lists, its data YAML and ultralytics' run folder (``workdir/ultralytics``, with ``weights/last.pt``
    and ``best.pt``). ``on_epoch(epoch, training)`` is called after each epoch's validation and
    ultralytics' own ``last.pt``; :meth:`save_checkpoint` writes what resumes the run from there.
    """

    def __init__(self, model: str | Path, export: YoloExport, selector: Selector, settings: DetectionSettings,
                 workdir: str | Path, *, train_split: str = "train", eval_split: str = "val",
                 on_epoch: Callable[[DetectionEpoch, "DetectionTraining"], None] | None = None,
                 evaluate_best_at_end: bool = False):
        self.model, self.export, self.selector, self.settings = str(model), export, selector, settings
        self.workdir = Path(workdir).resolve()
        self.train_split, self.eval_split = train_split, eval_split
        self.on_epoch, self.evaluate_best_at_end = on_epoch, evaluate_best_at_end
        self.images_processed = 0
        self.history: list[dict] = []
        self.current_ids = np.empty(0, dtype=np.int64)
        self.loaded_ids = np.empty(0, dtype=np.int64)  # what the trainer's train loader holds
        self.list_file: Path | None = None
        self.planned_epoch = -1  # the trainer epoch the current list was planned for
        self.trainer = None
        self._marks: dict[str, float] = {}
        self.first_epoch_started: float | None = None  # perf_counter() when the trainer began its first epoch
        self._epoch_feedback: tuple[float | None, float] = (None, 0.0)

    # -- selection ----------------------------------------------------------------------------

    def _plan(self, trainer_epoch: int) -> None:
        """The selector's next training plan (an update epoch, which trains nothing, is taken in the
        same breath: in detection an update does not use up one of the trainer's epochs)."""
        plan = self.selector.next_epoch()
        while not plan.train:
            plan = self.selector.next_epoch()
        if len(plan.ids) == 0:
            raise RuntimeError(f"selector {self.selector.name!r} planned an empty training epoch")
        self.current_ids = np.sort(plan.ids)
        self.list_file = write_image_list(self.workdir / "lists" / f"epoch-{trainer_epoch + 1:04d}.txt",
                                          self.export.image_files(self.train_split, self.current_ids))
        self.planned_epoch = trainer_epoch

    def write_data_yaml(self) -> Path:
        names = dict(enumerate(self.export.info["classes"]))
        data = {"path": str(self.export.root), "train": str(self.list_file),
                "val": str(self.export.root / "images" / self.eval_split), "nc": len(names), "names": names}
        path = self.workdir / "data.yaml"
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        return path

    # -- ultralytics callbacks ------------------------------------------------------------------

    def _on_train_epoch_start(self, trainer) -> None:
        if trainer.epoch != self.planned_epoch:
            self._plan(trainer.epoch)
        if not np.array_equal(self.current_ids, self.loaded_ids):
            old = trainer.train_loader
            trainer.train_loader = trainer.get_dataloader(str(self.list_file), batch_size=trainer.batch_size, rank=-1,
                                                          mode="train")
            if hasattr(old, "close"):
                old.close()
            if trainer.args.close_mosaic and trainer.epoch >= trainer.epochs - trainer.args.close_mosaic:
                trainer._close_dataloader_mosaic()  # the new loader starts with Mosaic on again
            self.loaded_ids = self.current_ids
        self._marks = {"start": time.perf_counter()}
        if self.first_epoch_started is None:
            self.first_epoch_started = self._marks["start"]

    def _on_train_epoch_end(self, trainer) -> None:
        self._marks["trained"] = time.perf_counter()
        self.images_processed += len(self.current_ids)
        accuracy = None
        if uses_feedback(self.selector):
            scores = score_images(trainer, self.list_file, self.settings.hardness)
            missing = [int(i) for i in self.current_ids if int(i) not in scores]
            if missing:
                raise RuntimeError(f"the hardness pass scored no result for image id(s) {missing[:10]}")
            hardness = np.array([scores[int(i)][0] for i in self.current_ids])
            right = np.array([scores[int(i)][1] for i in self.current_ids], dtype=bool)
            self.selector.observe(self.current_ids, hardness, right, hardness=hardness)
            accuracy = float(right.mean())
        self._epoch_feedback = (accuracy, time.perf_counter() - self._marks["trained"])

    def _on_fit_epoch_end(self, trainer) -> None:
        if trainer.epoch >= trainer.epochs:  # ultralytics' closing re-validation of best.pt, not an epoch
            return
        now = time.perf_counter()
        metrics = trainer.metrics or {}
        accuracy, hardness_seconds = self._epoch_feedback
        train_seconds = self._marks["trained"] - self._marks["start"]
        loss = None if trainer.tloss is None else float(sum(float(v) for v in trainer.tloss.values()))
        record = DetectionEpoch(
            epoch=trainer.epoch + 1, map50_95=float(metrics.get("metrics/mAP50-95(B)", 0.0)),
            map50=float(metrics.get("metrics/mAP50(B)", 0.0)), precision=float(metrics.get("metrics/precision(B)", 0.0)),
            recall=float(metrics.get("metrics/recall(B)", 0.0)), train_loss=loss, images=len(self.current_ids),
            images_processed=self.images_processed, subset_updates=self.selector.subset_updates,
            train_accuracy=accuracy, train_seconds=train_seconds, hardness_seconds=hardness_seconds,
            val_seconds=now - self._marks["trained"] - hardness_seconds, epoch_seconds=now - self._marks["start"])
        self.history.append(asdict(record))
        if self.on_epoch:
            self.on_epoch(record, self)

    # -- running ------------------------------------------------------------------------------

    def overrides(self, data_yaml: Path, resume_from: Path | None) -> dict:
        settings = self.settings
        # defaults the user may change in train_args: no dataloader worker processes (on CPU ultralytics
        # uses none anyway), no AMP (its check on CUDA downloads a model)
        args = {"workers": 0, "amp": False, **settings.train_args,
                "data": str(data_yaml), "epochs": settings.epochs, "imgsz": settings.image_size,
                "batch": settings.batch_size, "device": settings.device, "seed": settings.seed,
                "project": str(self.workdir), "name": "ultralytics", "exist_ok": True, "plots": False,
                "save": True, "val": True, "verbose": False}
        if resume_from is not None:
            args.update(model=str(resume_from), resume=str(resume_from))
        else:
            args["model"] = self.model
        return args

    def run(self, resume_from: str | Path | None = None):
        """Train (from scratch, or on from an ultralytics ``last.pt`` saved by an earlier run with
        the selector state restored by :meth:`load_state_dict`); returns the ultralytics trainer."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        start_epoch = 0
        if resume_from is not None:
            resume_from = Path(resume_from).resolve()
            start_epoch = int(torch.load(resume_from, map_location="cpu", weights_only=False)["epoch"]) + 1
        if self.planned_epoch != start_epoch:
            self._plan(start_epoch)
        data_yaml = self.write_data_yaml()
        trainer = _validator_classes()["trainer"](overrides=self.overrides(data_yaml, resume_from))
        trainer.evaluate_best_at_end = self.evaluate_best_at_end
        trainer.add_callback("on_train_epoch_start", self._on_train_epoch_start)
        trainer.add_callback("on_train_epoch_end", self._on_train_epoch_end)
        trainer.add_callback("on_fit_epoch_end", self._on_fit_epoch_end)
        self.loaded_ids = self.current_ids  # the trainer builds its first loader from data.yaml's list
        self.trainer = trainer
        trainer.train()
        return trainer

    @property
    def weights_dir(self) -> Path:
        return self.workdir / "ultralytics" / "weights"

    def state_dict(self) -> dict:
        """What resumes the selection side (the ultralytics side is ``weights/last.pt``)."""
        return {"selector": self.selector.state_dict(), "images_processed": self.images_processed,
                "history": list(self.history), "current_ids": self.current_ids.tolist(),
                "planned_epoch": self.planned_epoch}

    def load_state_dict(self, state: dict) -> None:
        self.selector.load_state_dict(state["selector"])
        self.images_processed = int(state["images_processed"])
        self.history = list(state["history"])
        self.current_ids = np.asarray(state["current_ids"], dtype=np.int64)
        self.planned_epoch = int(state["planned_epoch"])

    def save_checkpoint(self, folder: str | Path) -> Path:
        """Copy ``last.pt`` and the selection state into ``folder`` (a Tune checkpoint's contents)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(self.weights_dir / "last.pt", folder / "last.pt")
        torch.save(self.state_dict(), folder / "selection.pt")
        return folder


def evaluate_detector(weights: str | Path, export: YoloExport, split: str, settings: DetectionSettings,
                      save_dir: str | Path) -> dict:
    """mAP of saved weights on a split, with ultralytics' validator (loaded through ``ultralytics.YOLO``,
    as a user would load them)."""
    prepare_ultralytics()
    from ultralytics import YOLO

    names = export.info["classes"]
    metrics = YOLO(str(weights)).val(data=str(export.data_yaml), split=split, imgsz=settings.image_size,
                                     batch=settings.batch_size, device=settings.device, plots=False, verbose=False,
                                     workers=0, project=str(save_dir), name=f"test-{split}", exist_ok=True)
    box = metrics.box
    return {"map50_95": float(box.map), "map50": float(box.map50), "precision": float(box.mp), "recall": float(box.mr),
            "per_class_map50_95": {names[int(c)]: float(v) for c, v in zip(box.ap_class_index, box.ap)}}
