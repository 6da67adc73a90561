"""Training one candidate architecture as a Ray Tune trainable.

Each candidate trains for ``epochs_per_candidate`` epochs on the subsets its own selector picks
(selection applies per candidate, so DDS cuts the cost of every evaluation), reports validation
accuracy, images processed and time every epoch, and checkpoints every epoch so that a trial paused
by a scheduler (HyperBand) or interrupted by a failure resumes where it stopped.
"""
from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass

import torch
from ray import tune

from frugalnas.data.store import open_dataset
from frugalnas.data.torch_dataset import ImageSplit
from frugalnas.embed import load_latents
from frugalnas.runtime.tune_search import candidate_checkpoint
from frugalnas.selection.factory import selector_from_settings
from frugalnas.spaces import Space, load_space
from frugalnas.train.classify import SelectorTrainer, TrainSettings


@dataclass
class CandidateContext:
    """Everything a trial needs besides the architecture (absolute paths: Tune trials change directory)."""

    dataset_dir: str
    space: Space | dict | str  # the space itself, or a spec for load_space (name, path or settings mapping)
    selection: dict  # policy, subset_size, hardness, mastery, warmup_epochs, curriculum_stages, index
    train: dict  # TrainSettings fields; epochs = epochs per candidate
    latents_path: str | None = None
    eval_split: str = "val"
    torch_threads: int = 1


def candidate_metrics(space, arch, num_classes: int, channels: int, image_size: int) -> dict:
    """Cost metrics of an architecture, known before training (for objectives and constraints)."""
    return {"params": space.count_params(arch, num_classes, channels),
            "flops": space.count_flops(arch, num_classes, channels, image_size)}


def train_candidate(config: dict, context: CandidateContext) -> None:
    """The Tune function trainable: ``config = {"arch": canonical string, ...}`` (see StrategySearcher)."""
    torch.set_num_threads(context.torch_threads)
    space = context.space if isinstance(context.space, Space) else load_space(context.space)
    arch = space.parse(config["arch"])
    dataset = open_dataset(context.dataset_dir)
    train_data = ImageSplit(dataset, "train")
    eval_data = ImageSplit(dataset, context.eval_split)
    settings = TrainSettings(**context.train)
    torch.manual_seed(settings.seed)
    model = space.build(arch, len(dataset.classes), dataset.channels)
    latents = load_latents(context.latents_path) if context.latents_path else None
    selection = dict(context.selection)
    selector = selector_from_settings(selection.pop("policy"), train_data.ids, train_data.labels,
                                      total_epochs=settings.epochs, seed=settings.seed, latents=latents, **selection)
    trainer = SelectorTrainer(model, train_data, selector, settings)
    checkpoint = candidate_checkpoint(config)  # a retry, or an attempt that replaces one on a lost node
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            trainer.load_state_dict(torch.load(os.path.join(folder, "candidate.pt"), weights_only=False))
    cost = candidate_metrics(space, arch, len(dataset.classes), dataset.channels, train_data.images.shape[-1])
    started = time.perf_counter()
    while not trainer.done:
        result = trainer.run_epoch()
        accuracy = trainer.evaluate(eval_data)
        metrics = {"accuracy": accuracy, "train_accuracy": result.train_accuracy, "train_loss": result.train_loss,
                   "images_processed": result.images_processed, "subset_updates": result.subset_updates,
                   "epoch": result.epoch + 1, "epoch_seconds": result.seconds,
                   "seconds": time.perf_counter() - started, "arch": config["arch"], **cost}
        with tempfile.TemporaryDirectory() as folder:
            torch.save(trainer.state_dict(), os.path.join(folder, "candidate.pt"))
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder))
