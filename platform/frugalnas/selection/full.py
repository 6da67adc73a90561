"""``full``: every training image every epoch, the baseline every frugal policy is measured against."""
from __future__ import annotations

import numpy as np

from frugalnas.selection.base import SELECTORS, EpochPlan, Selector


@SELECTORS.register("full")
class FullData(Selector):
    """Trains on the whole training set each epoch, in a fresh seeded permutation.

    ``subset_size`` is accepted (so one config can switch policies) and ignored.
    """

    name = "full"
    uses_feedback = False

    def __init__(self, train_ids, train_labels, *, subset_size=None, seed=0):
        super().__init__(train_ids, train_labels, subset_size=None, seed=seed)

    def params(self) -> dict:
        return {"seed": self.seed}

    @property
    def subset(self) -> np.ndarray:
        return self._sorted_ids.copy()

    def _subset_record(self) -> None:
        return None  # always every training image; not worth N ids per epoch in the history

    def _plan_epoch(self, epoch: int) -> EpochPlan:
        return EpochPlan(epoch, True, self._rng.permutation(self.train_ids), False, 0)
