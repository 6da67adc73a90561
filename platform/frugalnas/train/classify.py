"""Training one classifier on the subsets a selector picks, epoch by epoch.

Plain PyTorch: the loop asks the selector for the epoch's plan, trains on those ids in the given
(curriculum) order, and hands back each image's confidence and correctness from the training forward
passes, the signal DDS-NAS mines hard examples from. Accuracy is measured on a held-out split,
never on the subset.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from frugalnas.data.torch_dataset import ImageSplit
from frugalnas.selection import Selector


@dataclass
class TrainSettings:
    epochs: int = 20
    batch_size: int = 64
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    seed: int = 0
    restart_lr_on_update: bool = True  # DDS: jump back to the top of the schedule after a subset update


@dataclass
class EpochResult:
    epoch: int
    trained: bool
    updated: bool
    images: int
    train_loss: float | None
    train_accuracy: float | None
    lr: float
    images_processed: int
    subset_updates: int
    seconds: float
    eval_accuracy: float | None = None


def train_epoch(model: nn.Module, optimizer: torch.optim.Optimizer, data: ImageSplit, ids: np.ndarray,
                batch_size: int) -> tuple[np.ndarray, np.ndarray, float]:
    """One pass over ``ids`` in order; returns (confidence of the predicted class, correct, mean loss)."""
    model.train()
    confidences, corrects, total_loss = [], [], 0.0
    for start in range(0, len(ids), batch_size):
        images, labels = data.batch(ids[start : start + batch_size])
        logits = model(images)
        loss = F.cross_entropy(logits, labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            confidence, predicted = F.softmax(logits, dim=1).max(dim=1)
        confidences.append(confidence.numpy())
        corrects.append((predicted == labels).numpy())
        total_loss += float(loss.detach()) * len(labels)
    return np.concatenate(confidences), np.concatenate(corrects), total_loss / max(1, len(ids))


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, data: ImageSplit, ids: np.ndarray, batch_size: int = 256) -> None:
    """Re-estimate BatchNorm running statistics with forward passes over ``ids``.

    A few hundred subset images give only a handful of optimiser steps per epoch, too few for the
    running averages to settle; without this, eval-mode accuracy lags far behind the model."""
    layers = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not layers or len(ids) == 0:
        return
    momenta = [m.momentum for m in layers]
    for m in layers:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the passes below
    model.train()
    for start in range(0, len(ids), batch_size):
        model(data.batch(ids[start : start + batch_size])[0])
    for m, momentum in zip(layers, momenta):
        m.momentum = momentum


@torch.no_grad()
def evaluate(model: nn.Module, data: ImageSplit, batch_size: int = 512) -> float:
    """Top-1 accuracy on a whole split."""
    model.eval()
    correct = 0
    for start in range(0, len(data), batch_size):
        logits = model(data.images[start : start + batch_size])
        correct += int((logits.argmax(1).numpy() == data.labels[start : start + batch_size]).sum())
    return correct / max(1, len(data))


def cosine_lr(epoch: int, *, lr: float, total_epochs: int, cycle_start: int = 0, lr_min: float = 0.0) -> float:
    """Cosine annealing from ``lr`` to ``lr_min`` over the epochs left after ``cycle_start``, the
    epoch the schedule last (re)started: DDS restarts it after a subset update."""
    length = max(1, total_epochs - cycle_start)
    t = max(0, epoch - cycle_start)
    return lr_min + 0.5 * (lr - lr_min) * (1 + math.cos(math.pi * t / length))


class SelectorTrainer:
    """Trains a model epoch by epoch on the ids a selector plans; checkpointable between epochs.

    SGD with cosine-annealed learning rate over ``settings.epochs``; with ``restart_lr_on_update``
    the schedule restarts after each subset update (as in the DDS-NAS DARTS port), since the new
    subset is a new, harder task.
    """

    def __init__(self, model: nn.Module, train_data: ImageSplit, selector: Selector, settings: TrainSettings):
        self.model, self.train_data, self.selector, self.settings = model, train_data, selector, settings
        self.optimizer = torch.optim.SGD(model.parameters(), lr=settings.lr, momentum=settings.momentum,
                                         weight_decay=settings.weight_decay, nesterov=True)
        self.epoch = 0
        self.cycle_start = 0
        self.last_trained = np.empty(0, dtype=np.int64)

    @property
    def done(self) -> bool:
        return self.epoch >= self.settings.epochs

    def run_epoch(self) -> EpochResult:
        started = time.perf_counter()
        epoch, settings = self.epoch, self.settings
        plan = self.selector.next_epoch()
        if plan.updated and settings.restart_lr_on_update:
            self.cycle_start = epoch + 1
        lr = cosine_lr(epoch, lr=settings.lr, total_epochs=settings.epochs, cycle_start=self.cycle_start)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        loss = accuracy = None
        if plan.train and len(plan.ids):
            confidence, correct, loss = train_epoch(self.model, self.optimizer, self.train_data, plan.ids,
                                                    settings.batch_size)
            self.selector.observe(plan.ids, confidence, correct)
            accuracy = float(correct.mean())
            self.last_trained = plan.ids
        self.epoch += 1
        return EpochResult(epoch, plan.train, plan.updated, len(plan.ids), loss, accuracy, lr,
                           self.selector.images_processed, self.selector.subset_updates,
                           time.perf_counter() - started)

    def evaluate(self, data: ImageSplit) -> float:
        """Accuracy on ``data`` after re-estimating BatchNorm statistics on the last trained subset."""
        recalibrate_batchnorm(self.model, self.train_data, self.last_trained)
        return evaluate(self.model, data)

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "selector": self.selector.state_dict(), "epoch": self.epoch, "cycle_start": self.cycle_start,
                "last_trained": self.last_trained.tolist()}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.selector.load_state_dict(state["selector"])
        self.epoch, self.cycle_start = state["epoch"], state["cycle_start"]
        self.last_trained = np.asarray(state["last_trained"], dtype=np.int64)


def train_with_selector(model: nn.Module, train_data: ImageSplit, selector: Selector, settings: TrainSettings, *,
                        eval_data: ImageSplit | None = None, eval_every: int = 0,
                        progress: Callable[[EpochResult], None] | None = None) -> list[EpochResult]:
    """Train ``model`` for ``settings.epochs`` epochs on the ids ``selector`` plans (see
    :class:`SelectorTrainer`). With ``eval_every``, accuracy on ``eval_data`` every that many epochs
    and at the end. BatchNorm statistics are re-estimated on the last trained subset before every
    evaluation and at the end. Returns one :class:`EpochResult` per epoch.
    """
    torch.manual_seed(settings.seed)
    trainer = SelectorTrainer(model, train_data, selector, settings)
    results = []
    while not trainer.done:
        result = trainer.run_epoch()
        if eval_data is not None and eval_every and (trainer.epoch % eval_every == 0 or trainer.done):
            result.eval_accuracy = trainer.evaluate(eval_data)
        results.append(result)
        if progress:
            progress(result)
    recalibrate_batchnorm(model, train_data, trainer.last_trained)
    return results
