"""``random``: a static, seeded, class-balanced random subset (the control DDS-NAS is compared to:
same data budget, no re-selection)."""
from __future__ import annotations

import numpy as np

from frugalnas.selection.base import SELECTORS, EpochPlan, Selector, balanced_subset, check_subset_size


class StaticSubset(Selector):
    """A subset drawn once (``self._subset``, sorted ids) and trained on every epoch, each epoch in a
    fresh seeded permutation; subclasses only say how it is drawn."""

    @property
    def subset(self) -> np.ndarray:
        return self._subset.copy()

    def _plan_epoch(self, epoch: int) -> EpochPlan:
        return EpochPlan(epoch, True, self._rng.permutation(self._subset), False, 0)

    def _policy_state(self) -> dict:
        return {"subset": self._subset.tolist()}

    def _load_policy_state(self, state: dict) -> None:
        self._subset = np.asarray(state["subset"], dtype=np.int64)


@SELECTORS.register("random")
class RandomSubset(StaticSubset):
    """Draws ``subset_size`` class-balanced images once and trains on them every epoch, each epoch
    in a fresh seeded permutation."""

    name = "random"
    uses_feedback = False

    def __init__(self, train_ids, train_labels, *, subset_size=None, seed=0):
        super().__init__(train_ids, train_labels, subset_size=subset_size, seed=seed)
        self.subset_size = check_subset_size(subset_size, len(self.train_ids), len(self.classes))
        self._subset = np.sort(
            balanced_subset(self.train_ids, self.train_labels, self.subset_size, self._rng)
        )
