"""``dynamic-random``: DDS-NAS's re-selection with a random replacement instead of the furthest
latent neighbour: the control that isolates what the autoencoder and the index contribute."""
from __future__ import annotations

import numpy as np

from frugalnas.selection.base import SELECTORS
from frugalnas.selection.dynamic import DynamicSelector


@SELECTORS.register("dynamic-random")
class DynamicRandomSelector(DynamicSelector):
    """:class:`DynamicSelector` whose replacement is a seeded random image of the same class that
    is outside the subset (and not chosen earlier in the same update). Takes the same parameters
    as ``dds`` except ``index``."""

    name = "dynamic-random"

    def replacement(self, easy_id, exclude):
        pool = self._class_ids[int(self.labels_of([easy_id])[0])]
        taken = np.fromiter(exclude, dtype=np.int64, count=len(exclude))
        candidates = pool[~np.isin(pool, taken)]
        if candidates.size == 0:
            return None
        return int(candidates[self._rng.integers(candidates.size)])
