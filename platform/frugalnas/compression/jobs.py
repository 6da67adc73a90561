"""One training job of the study: a fixed architecture trained from scratch on one dataset's train
split and scored on the test split of several datasets (the same images at other compression
levels): a classifier (plain PyTorch; top-1 accuracy, every image's prediction kept) or a detector
(ultralytics' trainer; mAP50-95, every image's matched predictions kept, see
:mod:`frugalnas.compression.detection`). :mod:`frugalnas.runtime.compression` runs many of them as
Ray tasks.

A job writes its result into its own folder (``result.json``, ``predictions.npz``, ``model.pt``), so
a study that stops resumes by skipping the jobs whose result is there; a trained model that only
lacks scores on test sets added since is scored again without retraining.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from frugalnas.data.store import open_dataset
from frugalnas.data.torch_dataset import ImageSplit
from frugalnas.errors import ConfigError, DataError
from frugalnas.selection import make_selector
from frugalnas.train.classify import TrainSettings, train_with_selector

RESULT_FILE, PREDICTIONS_FILE, MODEL_FILE = "result.json", "predictions.npz", "model.pt"


@dataclass
class ModelSpec:
    """An architecture to train: ``space`` is ``"baseline"`` (then ``arch`` names a built-in network)
    or a space spec for :func:`frugalnas.spaces.load_space` (a name, or resolved settings)."""

    space: str | dict
    arch: str
    label: str = ""

    def model_yaml(self, classes: list[str]) -> str:
        """The ultralytics model YAML of a detector (a ``yolo`` space architecture)."""
        from frugalnas.spaces import load_space

        space = None if self.space == "baseline" else load_space(self.space)
        if not hasattr(space, "model_yaml"):
            raise ConfigError(f"compression.model {self.label or self.arch!r} is not a detector; a detection data set "
                              "needs a yolo space architecture (yolo:ARCH) or run:PATH of a detection run")
        return space.model_yaml(space.parse(self.arch), len(classes), names=classes)

    def count_params(self, num_classes: int, channels: int) -> int:
        if self.space == "baseline":
            return sum(p.numel() for p in self.build(num_classes, channels).parameters())
        from frugalnas.spaces import load_space

        space = load_space(self.space)
        return int(space.count_params(space.parse(self.arch), num_classes, channels))

    def build(self, num_classes: int, channels: int) -> torch.nn.Module:
        if self.space == "baseline":
            from frugalnas.train.models import BASELINES

            return BASELINES.get(self.arch)(num_classes, channels)
        from frugalnas.spaces import load_space

        space = load_space(self.space)
        return space.build(space.parse(self.arch), num_classes, channels)


@dataclass
class TrainJob:
    key: str
    model: ModelSpec
    train_data: str  # dataset folder whose train split the model trains on
    test_data: dict[str, str]  # test-set name -> dataset folder whose test split it is scored on
    settings: dict  # TrainSettings fields (seed included)
    tags: dict = field(default_factory=dict)  # what the job is in the study (phase, level, ...)

    @classmethod
    def from_dict(cls, data: dict) -> "TrainJob":
        return cls(**{**data, "model": ModelSpec(**data["model"])})

    def to_dict(self) -> dict:
        return asdict(self)


def resolve_model(spec: str, space_spec: tuple[str, dict] = ("", {})) -> ModelSpec:
    """``SPACE:ARCH`` (``baseline:cnn``, ``nb201:|...|``) or ``run:PATH`` (the best architecture of a
    finished ``frugalnas run`` in PATH, built in that run's space with its settings). A SPACE named
    like the experiment's ``space`` (``space_spec``: name, settings) takes that space's settings."""
    kind, sep, rest = spec.partition(":")
    if not sep or not rest:
        raise ConfigError(f"compression.model {spec!r}: expected SPACE:ARCH (e.g. baseline:cnn) or run:PATH")
    if kind == "baseline":
        from frugalnas.train.models import BASELINES

        BASELINES.get(rest)  # unknown names fail here, naming the allowed ones
        return ModelSpec("baseline", rest, spec)
    if kind == "run":
        folder = Path(rest).expanduser().resolve()
        summary_path, config_path = folder / "summary.json", folder / "config.json"
        if not summary_path.exists() or not config_path.exists():
            raise ConfigError(f"compression.model {spec!r}: {folder} holds no finished run "
                              "(summary.json and config.json from `frugalnas run`)")
        from frugalnas.config import ExperimentConfig
        from frugalnas.spaces import load_space

        run_config = ExperimentConfig.model_validate(json.loads(config_path.read_text()))
        name, overrides = run_config.space_spec()
        space = load_space(name, overrides or None)
        arch = json.loads(summary_path.read_text())["best_arch"]
        return ModelSpec(space.config.model_dump(mode="json"), str(space.parse(arch)), f"{name}:{arch} (from {folder})")
    from frugalnas.spaces import load_space

    name, overrides = space_spec
    space = load_space(kind, (overrides or None) if kind == name else None)
    try:
        arch = space.parse(rest)
    except ValueError as error:
        raise ConfigError(f"compression.model {spec!r}: {error}") from None
    return ModelSpec(space.config.model_dump(mode="json"), str(arch), spec)


@torch.no_grad()
def predict(model: torch.nn.Module, data: ImageSplit, batch_size: int = 512) -> np.ndarray:
    """Predicted class of every image of ``data``, in its order."""
    model.eval()
    return np.concatenate([model(data.images[start : start + batch_size]).argmax(1).numpy()
                           for start in range(0, len(data), batch_size)] or [np.zeros(0, np.int64)])


TRAINING_KEYS = ("model", "train_data", "settings")  # what makes two jobs train the same model


def job_status(job: TrainJob, folder: str | Path) -> str:
    """``done`` (its result is there), ``rescore`` (its model is trained, but not yet scored on every
    test set of ``job``) or ``train``."""
    path = Path(folder) / RESULT_FILE
    if not path.exists():
        return "train"
    previous = json.loads(path.read_text())["job"]
    wanted = job.to_dict()
    if any(previous[key] != wanted[key] for key in TRAINING_KEYS) or not (Path(folder) / MODEL_FILE).exists():
        return "train"
    return "done" if set(wanted["test_data"].items()) <= set(previous["test_data"].items()) else "rescore"


def run_job(job: TrainJob, folder: str | Path, progress=None) -> dict:
    """Train (or, when its trained model is there, only re-score) and score ``job``; write its
    result files into ``folder``; return ``result.json``'s content."""
    folder = Path(folder)
    dataset = open_dataset(job.train_data)
    if dataset.card["task"] == "detection":
        return run_detection_job(job, folder, dataset)
    started = time.perf_counter()
    settings = TrainSettings(**job.settings)
    torch.manual_seed(settings.seed)
    model = job.model.build(len(dataset.classes), dataset.channels)
    if job_status(job, folder) == "rescore":
        previous = json.loads((folder / RESULT_FILE).read_text())
        model.load_state_dict(torch.load(folder / MODEL_FILE, weights_only=True))
        images_processed, train_seconds = previous["images_processed"], previous["train_seconds"]
    else:
        train_data = ImageSplit(dataset, "train")
        selector = make_selector("full", train_data.ids, train_data.labels, seed=settings.seed)
        train_with_selector(model, train_data, selector, settings, progress=progress)
        images_processed, train_seconds = selector.images_processed, time.perf_counter() - started
    predictions, accuracies, ids, labels = {}, {}, None, None
    for name, path in job.test_data.items():
        test = ImageSplit(open_dataset(path), "test")
        order = np.argsort(test.ids, kind="stable")  # every test set in id order, so they pair up
        predicted = predict(model, test)[order]
        if ids is None:
            ids, labels = test.ids[order], test.labels[order]
        elif not np.array_equal(ids, test.ids[order]):
            raise DataError(f"test set {name!r} ({path}) holds other images than {next(iter(job.test_data))!r}: "
                            "every level must be recoded from the same dataset")
        predictions[name] = predicted.astype(np.int16)
        accuracies[name] = float((predicted == labels).mean())
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), folder / MODEL_FILE)
    np.savez_compressed(folder / PREDICTIONS_FILE, ids=ids, labels=labels, **predictions)
    result = {"key": job.key, "task": "classification", "metric": "accuracy", "accuracy": accuracies,
              "params": sum(p.numel() for p in model.parameters()),
              "images_processed": images_processed, "train_seconds": round(train_seconds, 3),
              "wall_seconds": round(time.perf_counter() - started, 3), "job": job.to_dict()}
    # written last: its presence marks the job done
    (folder / RESULT_FILE).write_text(json.dumps(result, indent=2) + "\n")
    return result


def run_detection_job(job: TrainJob, folder: Path, dataset) -> dict:
    """A detector trained by ultralytics on the full train split (its best epoch on val kept, as
    ultralytics does) and scored on every test set: mAP50-95 (``accuracy`` in the result, the
    study's score) and mAP50, with every image's matched predictions in ``predictions.npz``."""
    import shutil

    from frugalnas.compression.detection import STAT_KEYS, image_stats, mean_ap
    from frugalnas.data.yolo_export import dominant_classes, export_yolo
    from frugalnas.train.detect import DetectionSettings, DetectionTraining

    started = time.perf_counter()
    settings = DetectionSettings(**job.settings)
    folder.mkdir(parents=True, exist_ok=True)
    weights = folder / MODEL_FILE  # ultralytics weights: ultralytics.YOLO(folder / "model.pt")
    if job_status(job, folder) == "rescore":
        previous = json.loads((folder / RESULT_FILE).read_text())
        images_processed, train_seconds = previous["images_processed"], previous["train_seconds"]
    else:
        model_yaml = folder / "model.yaml"
        model_yaml.write_text(job.model.model_yaml(dataset.classes))
        table = dataset.table("train", ["id", "boxes"])
        ids, labels = table["id"].to_numpy(), dominant_classes(table["boxes"].to_pylist(), len(dataset.classes))
        workdir = folder / "train"
        if workdir.exists():
            shutil.rmtree(workdir)  # an interrupted job starts again from scratch
        training = DetectionTraining(model_yaml, export_yolo(dataset), make_selector("full", ids, labels, seed=settings.seed),
                                     settings, workdir)
        training.run()
        best = training.weights_dir / "best.pt"
        shutil.copyfile(best if best.exists() else training.weights_dir / "last.pt", weights)
        images_processed, train_seconds = training.images_processed, time.perf_counter() - started
    arrays, scores, map50, ids = {}, {}, {}, None
    for name, path in job.test_data.items():
        test = open_dataset(path)
        test_ids = np.sort(test.labels("test")[0])
        if ids is None:
            ids = test_ids
        elif not np.array_equal(ids, test_ids):
            raise DataError(f"test set {name!r} ({path}) holds other images than {next(iter(job.test_data))!r}: "
                            "every level must be recoded from the same dataset")
        stats = image_stats(weights, export_yolo(test), "test", settings, folder / "val" / name, ids)
        scores[name], map50[name] = mean_ap(stats)
        arrays.update({f"{name}.{key}": stats[key] for key in STAT_KEYS})
    np.savez_compressed(folder / PREDICTIONS_FILE, ids=ids, **arrays)
    result = {"key": job.key, "task": "detection", "metric": "map50_95", "accuracy": scores, "map50": map50,
              "params": job.model.count_params(len(dataset.classes), 3), "images_processed": images_processed,
              "train_seconds": round(train_seconds, 3), "wall_seconds": round(time.perf_counter() - started, 3),
              "job": job.to_dict()}
    (folder / RESULT_FILE).write_text(json.dumps(result, indent=2) + "\n")
    return result


def load_predictions(folder: str | Path) -> dict[str, np.ndarray]:
    with np.load(Path(folder) / PREDICTIONS_FILE) as data:
        return {name: data[name] for name in data.files}
