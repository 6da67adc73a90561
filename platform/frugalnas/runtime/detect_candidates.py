"""Training one detector candidate as a Ray Tune trainable (the detection counterpart of
:mod:`frugalnas.runtime.candidates`).

ultralytics' trainer runs the candidate's epochs; after each epoch's validation the trial reports
validation mAP50-95 (the search's metric), mAP50, images processed and where the time went, with a
checkpoint (ultralytics' ``last.pt`` plus the selector's state), so ASHA can stop a poor candidate
after any epoch and a paused or failed trial resumes where it stopped.
"""
from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from ray import tune

from frugalnas.data.store import open_dataset
from frugalnas.data.yolo_export import YoloExport, dominant_classes
from frugalnas.embed import load_latents
from frugalnas.runtime.tune_search import candidate_checkpoint
from frugalnas.selection.factory import selector_from_settings
from frugalnas.spaces import load_space
from frugalnas.train.detect import DetectionSettings, DetectionTraining
from frugalnas.train.yolo_env import prepare_ultralytics


@dataclass
class DetectionContext:
    """Everything a detection trial needs besides the architecture (absolute paths)."""

    dataset_dir: str
    export_dir: str  # the dataset written as a YOLO folder (data/yolo_export.py)
    space: dict | str
    selection: dict
    train: dict  # DetectionSettings fields; epochs = epochs per candidate
    latents_path: str | None = None
    eval_split: str = "val"
    torch_threads: int = 1
    ultralytics_dir: str | None = None


def train_labels(dataset) -> tuple:
    """(ids, dominant class) of the training images: what detection selectors balance over."""
    table = dataset.table("train", ["id", "boxes"])
    return table["id"].to_numpy(), dominant_classes(table["boxes"].to_pylist(), len(dataset.classes))


def detection_cost(space, arch, num_classes: int, image_size: int) -> dict:
    """Parameters and FLOPs (multiply-accumulates) at the training image size."""
    return {"params": space.count_params(arch, num_classes, 3),
            "flops": space.count_flops(arch, num_classes, 3, image_size)}


def train_detection_candidate(config: dict, context: DetectionContext) -> None:
    """The Tune function trainable: ``config = {"arch": canonical string}``."""
    started = time.perf_counter()
    torch.set_num_threads(context.torch_threads)
    prepare_ultralytics(context.ultralytics_dir)
    space = load_space(context.space)
    arch = space.parse(config["arch"])
    dataset = open_dataset(context.dataset_dir)
    export = YoloExport(context.export_dir)
    ids, labels = train_labels(dataset)
    latents = load_latents(context.latents_path) if context.latents_path else None
    settings = DetectionSettings(**context.train)
    selection = dict(context.selection)
    selector = selector_from_settings(selection.pop("policy"), ids, labels, total_epochs=settings.epochs,
                                      seed=settings.seed, latents=latents, **selection)
    workdir = Path(tune.get_context().get_trial_dir()) / "detector"
    workdir.mkdir(parents=True, exist_ok=True)
    model_file = workdir / "model.yaml"
    model_file.write_text(space.model_yaml(arch, len(dataset.classes), names=dataset.classes))
    cost = detection_cost(space, arch, len(dataset.classes), settings.image_size)

    def report(epoch, training: DetectionTraining) -> None:
        # setup: from the trial's start to its first epoch (imports, model build, ultralytics' trainer set-up)
        metrics = {**epoch.metrics(), "seconds": time.perf_counter() - started,
                   "setup_seconds": training.first_epoch_started - started, "arch": config["arch"], **cost}
        with tempfile.TemporaryDirectory() as folder:
            training.save_checkpoint(folder)
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder))

    training = DetectionTraining(model_file, export, selector, settings, workdir, eval_split=context.eval_split,
                                 on_epoch=report)
    resume_from = None
    checkpoint = candidate_checkpoint(config)  # a retry, or an attempt that replaces one on a lost node
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            state = torch.load(os.path.join(folder, "selection.pt"), weights_only=False)
            resume_from = workdir / "resume-last.pt"
            resume_from.write_bytes(Path(folder, "last.pt").read_bytes())
        training.load_state_dict(state)
        if len(training.history) >= settings.epochs:  # every epoch was already reported
            return
    training.run(resume_from=resume_from)
