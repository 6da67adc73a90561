"""Training one classifier on the subsets a selector picks, epoch by epoch.

Plain PyTorch: the loop asks the selector for the epoch's plan, trains on those ids in the given
(curriculum) order, and hands back each image's confidence and correctness from the training forward
passes, the signal DDS-NAS mines hard examples from. Accuracy is measured on a held-out split,
never on the subset.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from typing import Callable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from frugalnas.data.torch_dataset import ImageSplit
from frugalnas.errors import ConfigError, FrugalError
from frugalnas.selection import Selector


class TrainingDiverged(FrugalError):
    """The training loss became NaN or infinite (too high a learning rate, an unstable architecture)."""


SCHEDULES = ("cosine", "onecycle")
#: One-cycle: the share of the schedule spent warming up linearly, from lr * ONECYCLE_START to lr.
ONECYCLE_WARMUP = 0.1
ONECYCLE_START = 1 / 25  # PyTorch OneCycleLR's default div_factor
#: BatchNorm statistics are re-estimated on at most this many images of the last plan (a few
#: thousand settle the running averages; a whole 50,000-image epoch would cost a forward pass each).
RECALIBRATION_IMAGES = 4096


@dataclass
class TrainSettings:
    """How a :class:`SelectorTrainer` trains.

    Training stops after ``epochs`` epochs or ``images_budget`` training images (forward + backward),
    whichever comes first; either may be None, not both. With a budget the learning rate follows
    ``schedule`` over ``schedule_images`` images (default: the budget), stepped per optimiser step;
    without one it follows ``schedule`` over the epochs, stepped per epoch.
    """

    epochs: int | None = 20
    batch_size: int = 64
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    seed: int = 0
    restart_lr_on_update: bool = True  # DDS: jump back to the top of the schedule after a subset update
    images_budget: int | None = None  # stop after exactly this many training images, mid-epoch if needed
    schedule: str = "cosine"  # "cosine" annealing or "onecycle" (linear warm-up, then cosine down)
    schedule_images: int | None = None  # the schedule's length in images; default images_budget

    def __post_init__(self):
        for name in ("epochs", "images_budget", "schedule_images"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < (
                    0 if name == "epochs" else 1)):
                raise ConfigError(f"training setting {name} must be an integer >= {0 if name == 'epochs' else 1} "
                                  f"or None, got {value!r}")
        if self.epochs is None and self.images_budget is None:
            raise ConfigError("training needs an end: set epochs, images_budget or both")
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"unknown learning-rate schedule {self.schedule!r}; allowed: {', '.join(SCHEDULES)}")
        if self.schedule_images is not None and self.images_budget is not None \
                and self.schedule_images < self.images_budget:
            raise ConfigError(f"schedule_images ({self.schedule_images}) is shorter than images_budget "
                              f"({self.images_budget}): the learning rate would sit at zero for the rest")
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ConfigError(f"batch_size must be an integer >= 1, got {self.batch_size!r}")

    @property
    def schedule_length(self) -> int | None:
        """Images the learning-rate schedule runs over (None: it runs over the epochs)."""
        return self.schedule_images or self.images_budget


@dataclass
class EpochResult:
    """What one :meth:`SelectorTrainer.run_epoch` call did. ``images`` counts the images trained in
    this call; ``train_loss`` / ``train_accuracy`` are over the epoch's images so far (an epoch cut by
    the budget and continued later reports the whole epoch when it completes); ``complete`` is False
    when the budget ended the call mid-epoch; ``lr`` is the last step's learning rate."""

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
    complete: bool = True


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, images: torch.Tensor,
               labels: torch.Tensor) -> tuple[float, np.ndarray, np.ndarray]:
    """One SGD step on a batch; returns (mean loss, confidence of the predicted class, correct)."""
    logits = model(images)
    loss = F.cross_entropy(logits, labels)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    with torch.no_grad():
        confidence, predicted = F.softmax(logits, dim=1).max(dim=1)
    return float(loss.detach()), confidence.numpy(), (predicted == labels).numpy()


def train_epoch(model: nn.Module, optimizer: torch.optim.Optimizer, data: ImageSplit, ids: np.ndarray,
                batch_size: int) -> tuple[np.ndarray, np.ndarray, float]:
    """One pass over ``ids`` in order; returns (confidence of the predicted class, correct, mean loss)."""
    model.train()
    confidences, corrects, total_loss = [], [], 0.0
    for start in range(0, len(ids), batch_size):
        images, labels = data.batch(ids[start : start + batch_size])
        loss, confidence, correct = train_step(model, optimizer, images, labels)
        confidences.append(confidence)
        corrects.append(correct)
        total_loss += loss * len(labels)
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


def scheduled_lr(progress: float, *, lr: float, schedule: str = "cosine", lr_min: float = 0.0) -> float:
    """The learning rate at ``progress`` in [0, 1] of a schedule (clipped to that range).

    ``cosine``: cosine annealing from ``lr`` to ``lr_min``. ``onecycle``: a linear warm-up from
    ``lr * ONECYCLE_START`` to ``lr`` over the first ``ONECYCLE_WARMUP`` of the schedule, then cosine
    annealing to ``lr_min`` (Smith's one-cycle policy, as PyTorch's OneCycleLR with cosine annealing)."""
    t = min(max(float(progress), 0.0), 1.0)
    if schedule == "onecycle":
        if t < ONECYCLE_WARMUP:
            start = lr * ONECYCLE_START
            return start + (lr - start) * t / ONECYCLE_WARMUP
        t = (t - ONECYCLE_WARMUP) / (1 - ONECYCLE_WARMUP)
    elif schedule != "cosine":
        raise ValueError(f"unknown learning-rate schedule {schedule!r}; allowed: {', '.join(SCHEDULES)}")
    return lr_min + 0.5 * (lr - lr_min) * (1 + math.cos(math.pi * t))


def cosine_lr(epoch: int, *, lr: float, total_epochs: int, cycle_start: int = 0, lr_min: float = 0.0,
              schedule: str = "cosine") -> float:
    """The per-epoch schedule (cosine annealing from ``lr`` to ``lr_min`` by default) over the epochs
    left after ``cycle_start``, the epoch the schedule last (re)started: DDS restarts it after a
    subset update."""
    length = max(1, total_epochs - cycle_start)
    return scheduled_lr(max(0, epoch - cycle_start) / length, lr=lr, schedule=schedule, lr_min=lr_min)


class SelectorTrainer:
    """Trains a model on the ids a selector plans, batch by batch; checkpointable at any batch.

    SGD with Nesterov momentum. Training ends after ``settings.epochs`` epochs or
    ``settings.images_budget`` images, whichever comes first (:attr:`done`); the budget is exact: the
    batch that reaches it is cut, mid-epoch if need be. :meth:`raise_budget` moves the end further and
    the next :meth:`run_epoch` continues exactly where training stopped (the rest of the interrupted
    epoch's plan first, starting with the rest of the cut batch), so one run can be evaluated at several
    budgets: it trains the same batches as a run that never stopped, except that each cut batch takes
    two optimiser steps (none when the budget falls on a batch boundary of the epoch).

    Learning rate: with a budget, ``settings.schedule`` runs over ``settings.schedule_length`` images,
    set before every optimiser step from the images processed; without one it runs over the epochs,
    set once per epoch. With ``restart_lr_on_update`` the schedule restarts after each subset update
    (as in the DDS-NAS DARTS port; from the update's epoch, or its image count under a budget), since
    the new subset is a new, harder task.

    :attr:`loss_trace` holds one ``(images processed after the batch, mean loss of the batch)`` pair
    per optimiser step, for training-speed estimates such as the sum of training losses (Ru et al.
    2021). :attr:`images_processed` counts every image trained on and equals the selector's count.
    """

    def __init__(self, model: nn.Module, train_data: ImageSplit, selector: Selector, settings: TrainSettings):
        self.model, self.train_data, self.selector = model, train_data, selector
        self.settings = replace(settings)  # a private copy: raise_budget changes it
        self.optimizer = torch.optim.SGD(model.parameters(), lr=settings.lr, momentum=settings.momentum,
                                         weight_decay=settings.weight_decay, nesterov=True)
        self.epoch = 0  # epochs completed (an epoch cut by the budget completes when training continues)
        self.cycle_start = 0  # epoch the per-epoch schedule last restarted at
        self.cycle_start_images = 0  # image count the per-image schedule last restarted at
        self.images_processed = 0
        self.loss_trace: list[tuple[int, float]] = []
        self.last_trained = np.empty(0, dtype=np.int64)
        self.lr = self._epoch_lr() if settings.schedule_length is None else self._image_lr()
        self._position: int | None = None  # index into the current plan's ids while an epoch is open
        self._epoch_totals = [0, 0.0, 0]  # images, summed loss, correct of the open epoch

    # ------------------------------------------------------------ the end of training

    @property
    def images_budget(self) -> int | None:
        return self.settings.images_budget

    @property
    def budget_reached(self) -> bool:
        return self.settings.images_budget is not None and self.images_processed >= self.settings.images_budget

    @property
    def done(self) -> bool:
        """True once the epochs or the image budget are used up."""
        return self.budget_reached or (self.settings.epochs is not None and self.epoch >= self.settings.epochs)

    def raise_budget(self, images_budget: int) -> None:
        """Move the image budget to ``images_budget`` (>= the images processed); training continues
        where it stopped. The schedule keeps ``settings.schedule_images`` if that was set (set it to
        the largest budget to evaluate checkpoints of one run); otherwise it stretches to the new budget."""
        if isinstance(images_budget, bool) or not isinstance(images_budget, int) or \
                images_budget < self.images_processed:
            raise ValueError(f"images_budget must be an integer >= the {self.images_processed} images already "
                             f"processed, got {images_budget!r}")
        self.settings = replace(self.settings, images_budget=images_budget)

    # ------------------------------------------------------------ training

    def _epoch_lr(self) -> float:
        s = self.settings
        return cosine_lr(self.epoch, lr=s.lr, total_epochs=s.epochs, cycle_start=self.cycle_start,
                         schedule=s.schedule)

    def _image_lr(self) -> float:
        s = self.settings
        length = max(1, s.schedule_length - self.cycle_start_images)
        return scheduled_lr((self.images_processed - self.cycle_start_images) / length, lr=s.lr, schedule=s.schedule)

    def _set_lr(self, lr: float) -> None:
        self.lr = lr
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def run_epoch(self) -> EpochResult:
        """Train the next epoch (or the rest of one the budget cut) until its plan ends or the budget
        is reached; returns what this call did."""
        if self.done:
            raise RuntimeError("training is done (epochs or image budget used up): raise_budget() to continue")
        started = time.perf_counter()
        settings = self.settings
        if self._position is None:  # open a new epoch
            plan = self.selector.next_epoch()
            if plan.updated and settings.restart_lr_on_update:
                self.cycle_start, self.cycle_start_images = self.epoch + 1, self.images_processed
            self._position, self._epoch_totals = 0, [0, 0.0, 0]
            if settings.schedule_length is None:
                self._set_lr(self._epoch_lr())
            if plan.train and len(plan.ids):
                self.last_trained = plan.ids
        else:  # continue the epoch the budget cut
            plan = self.selector.plan
        ids = plan.ids if plan.train else plan.ids[:0]
        trained = 0
        self.model.train()
        while self._position < len(ids) and not self.budget_reached:
            # batches stay on the epoch's grid of batch_size: after a cut, the rest of the cut batch comes
            # first, so a run stopped and continued trains the same batches as one that never stopped,
            # except that the cut batch takes two steps
            take = settings.batch_size - self._position % settings.batch_size
            if settings.images_budget is not None:
                take = min(take, settings.images_budget - self.images_processed)
            batch = ids[self._position : self._position + take]
            if settings.schedule_length is not None:
                self._set_lr(self._image_lr())
            images, labels = self.train_data.batch(batch)
            loss, confidence, correct = train_step(self.model, self.optimizer, images, labels)
            if not math.isfinite(loss):  # the weights are now ruined: every later number would be noise
                raise TrainingDiverged(f"the training loss became {loss} in epoch {self.epoch + 1} "
                                       f"(after {self.images_processed} images, learning rate {self.lr:.3g})")
            self.selector.observe(batch, confidence, correct)
            self._position += len(batch)
            self.images_processed += len(batch)
            trained += len(batch)
            self.loss_trace.append((self.images_processed, loss))
            totals = self._epoch_totals
            totals[0] += len(batch)
            totals[1] += loss * len(batch)
            totals[2] += int(correct.sum())
        epoch, complete = self.epoch, self._position >= len(ids)
        if complete:
            self.epoch += 1
            self._position = None
        n, loss_sum, n_correct = self._epoch_totals
        return EpochResult(epoch, plan.train, plan.updated, trained, loss_sum / n if n else None,
                           n_correct / n if n else None, self.lr, self.images_processed,
                           self.selector.subset_updates, time.perf_counter() - started, complete=complete)

    def evaluate(self, data: ImageSplit) -> float:
        """Accuracy on ``data`` after re-estimating BatchNorm statistics on (at most
        ``RECALIBRATION_IMAGES`` of) the last trained plan."""
        recalibrate_batchnorm(self.model, self.train_data, self.last_trained[:RECALIBRATION_IMAGES])
        return evaluate(self.model, data)

    # ------------------------------------------------------------ checkpointing

    def state_dict(self) -> dict:
        """Everything to continue exactly here, between any two batches."""
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "selector": self.selector.state_dict(), "epoch": self.epoch, "cycle_start": self.cycle_start,
                "cycle_start_images": self.cycle_start_images, "images_processed": self.images_processed,
                "images_budget": self.settings.images_budget, "position": self._position,
                "epoch_totals": list(self._epoch_totals), "lr": self.lr,
                "loss_trace": [list(x) for x in self.loss_trace], "last_trained": self.last_trained.tolist(),
                "torch_rng": torch.get_rng_state()}

    def load_state_dict(self, state: dict) -> None:
        """Continue from ``state`` (the image budget it was saved with included)."""
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.selector.load_state_dict(state["selector"])
        self.epoch, self.cycle_start = state["epoch"], state["cycle_start"]
        self.cycle_start_images = state.get("cycle_start_images", 0)
        self.images_processed = state.get("images_processed", self.selector.images_processed)
        if "images_budget" in state:
            self.settings = replace(self.settings, images_budget=state["images_budget"])
        self._position = state.get("position")
        self._epoch_totals = list(state.get("epoch_totals", [0, 0.0, 0]))
        self.lr = state.get("lr", self.lr)
        self._set_lr(self.lr)
        self.loss_trace = [(int(i), float(v)) for i, v in state.get("loss_trace", [])]
        self.last_trained = np.asarray(state["last_trained"], dtype=np.int64)
        if "torch_rng" in state:
            torch.set_rng_state(state["torch_rng"])


def train_with_selector(model: nn.Module, train_data: ImageSplit, selector: Selector, settings: TrainSettings, *,
                        eval_data: ImageSplit | None = None, eval_every: int = 0,
                        progress: Callable[[EpochResult], None] | None = None) -> list[EpochResult]:
    """Train ``model`` until ``settings.epochs`` or ``settings.images_budget`` is used up, on the ids
    ``selector`` plans (see :class:`SelectorTrainer`). With ``eval_every``, accuracy on ``eval_data``
    every that many epochs and at the end. BatchNorm statistics are re-estimated on the last trained
    plan before every evaluation and at the end. Returns one :class:`EpochResult` per epoch.
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
    recalibrate_batchnorm(model, train_data, trainer.last_trained[:RECALIBRATION_IMAGES])
    return results
