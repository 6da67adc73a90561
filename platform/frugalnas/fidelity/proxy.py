"""One cheap evaluation: an architecture trained with one selection arm and seed, scored at each
image budget.

Comparisons between arms are paired: an architecture starts from the same initial weights in every
arm (``torch.manual_seed(seed)`` before it is built) and every subset arm draws its first subset
with the same seed. Scores, all "higher = better":

* ``accuracy``: accuracy on the held-out eval split at the budget (BatchNorm statistics re-estimated
  on the last images trained on, as candidate training does);
* ``tse``: minus the mean training loss over every image trained on up to the budget (the training
  speed estimate of Ru et al. 2021: networks that will end up better tend to learn faster);
* ``tse_last_quarter``: the same over the last quarter of the budget only (early losses are mostly
  the initialisation's).

With ``checkpoints`` one run trains to the largest budget and is scored as it passes each budget
(the learning-rate schedule then runs over ``schedule_images``, the measurement's largest budget,
for every arm alike, so arms that stop earlier are compared at the same point of the schedule);
without, each budget is a fresh run from the same initial weights whose schedule runs over that
budget.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import numpy as np
import torch

from frugalnas.data.torch_dataset import ImageSplit
from frugalnas.selection.factory import selector_from_settings
from frugalnas.spaces.base import Arch, Space
from frugalnas.train.classify import SelectorTrainer, TrainSettings


def loss_scores(trace: list[tuple[int, float]] | np.ndarray, budget: int) -> dict[str, float]:
    """``tse`` and ``tse_last_quarter`` from a trainer's loss trace: (images processed after the
    batch, mean loss of the batch) per batch, each batch weighted by its images."""
    trace = np.asarray(trace, dtype=np.float64).reshape(-1, 2)
    trace = trace[trace[:, 0] <= budget]
    if not len(trace):
        return {"tse": float("nan"), "tse_last_quarter": float("nan")}
    images, losses = trace[:, 0], trace[:, 1]
    sizes = np.diff(np.concatenate([[0.0], images]))
    late = images > 0.75 * budget
    late_mean = np.average(losses[late], weights=sizes[late]) if late.any() else losses[-1]
    return {"tse": -float(np.average(losses, weights=sizes)), "tse_last_quarter": -float(late_mean)}


@dataclass
class ProxyRun:
    """Trains ``arch`` with the selection ``settings`` and yields one record per budget.

    ``settings``: the arm's selection settings (``policy`` and its parameters, as in the
    experiment YAML's ``selection``); ``train``: batch_size, lr, momentum, weight_decay, schedule;
    ``selector_inputs``: what the policy needs besides the data (``latents`` for dds, ...).
    """

    space: Space
    arch: Arch
    train_data: ImageSplit
    eval_data: ImageSplit
    num_classes: int
    channels: int
    settings: dict
    train: dict
    seed: int
    budgets: list[int]
    checkpoints: bool = False
    schedule_images: int | None = None  # checkpoints: the schedule's length (default: the largest budget)
    selector_inputs: dict = field(default_factory=dict)
    last_trainer: SelectorTrainer | None = field(default=None, init=False, repr=False)  # for inspection

    def _trainer(self, budget: int, schedule_images: int | None = None) -> SelectorTrainer:
        torch.manual_seed(self.seed)  # the same initial weights for this architecture in every arm
        model = self.space.build(self.arch, self.num_classes, self.channels)
        settings = {**self.settings, **self.selector_inputs}  # prepared inputs fill the settings left empty
        policy = settings.pop("policy")
        settings.pop("max_budget", None)
        selector = selector_from_settings(policy, self.train_data.ids, self.train_data.labels, seed=self.seed,
                                          **settings)
        train = TrainSettings(epochs=None, images_budget=budget, schedule_images=schedule_images, seed=self.seed,
                              **self.train)
        return SelectorTrainer(model, self.train_data, selector, train)

    def _score(self, trainer: SelectorTrainer, budget: int, started: float) -> dict[str, Any]:
        accuracy = trainer.evaluate(self.eval_data)
        return {"budget": budget, "accuracy": accuracy, **loss_scores(trainer.loss_trace, budget),
                "images_processed": int(trainer.images_processed),
                "subset_updates": int(trainer.selector.subset_updates),
                "epochs": int(trainer.epoch), "seconds": round(time.perf_counter() - started, 3)}

    def run(self, done: list[dict] | None = None, state: dict | None = None
            ) -> Iterator[tuple[dict, Callable[[], dict]]]:
        """Yield ``(record, state_fn)`` as each budget is reached; ``state_fn()`` is what to save to
        continue from there. ``done``/``state`` continue a run saved that way: budgets already
        scored are skipped (with ``checkpoints`` the trainer resumes exactly where it stopped;
        without, the next budget starts afresh, as it would have anyway)."""
        done = list(done or [])
        remaining = [b for b in self.budgets if b not in {r["budget"] for r in done}]
        if not remaining:
            return
        if self.checkpoints:
            trainer = self.last_trainer = self._trainer(remaining[0], schedule_images=self.schedule_images or
                                                        self.budgets[-1])
            if state is not None:
                trainer.load_state_dict(state["trainer"])
            started = time.perf_counter() - (done[-1]["seconds"] if done else 0.0)
            for budget in remaining:
                trainer.raise_budget(budget)
                while not trainer.done:
                    trainer.run_epoch()
                record = self._score(trainer, budget, started)
                done.append(record)
                yield record, lambda: {"records": list(done), "trainer": trainer.state_dict()}
        else:
            for budget in remaining:
                started = time.perf_counter()
                trainer = self.last_trainer = self._trainer(budget)
                while not trainer.done:
                    trainer.run_epoch()
                record = self._score(trainer, budget, started)
                done.append(record)
                yield record, lambda: {"records": list(done)}
