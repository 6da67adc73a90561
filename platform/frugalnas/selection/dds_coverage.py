"""``dds-coverage``: DDS with a coverage-preserving replacement instead of the single furthest image.

DDS swaps each easy image for the image of its class furthest from it in latent space. Measured on
CIFAR-10 (benchmarks/RESULTS.md), those are the class's outliers: unusual images that teach a small
network little and pull its ranking away from the full-data order. The data-pruning literature says
the same at small subsets: keeping only hard or extreme examples loses to random, and preserving
the *coverage* of the data distribution wins (Zheng et al. ICLR'23, "Coverage-centric coreset
selection"; Sener & Savarese ICLR'18, k-center core-sets).

So here an easy image is replaced by the same-class image that lies in the region of latent space
the subset covers worst: the candidate whose nearest subset member (of that class, the replacements
chosen so far included) is furthest away (greedy k-center), among the class's *typical* images only
(those whose distance to the class centroid is within the ``coverage_quantile`` quantile), so that
outliers are never drawn. Everything else (hardness, mastery, update epochs, order) is DDS's.
"""
from __future__ import annotations

import numpy as np

from frugalnas.selection.base import SELECTORS, check_fraction
from frugalnas.selection.dds import DDSSelector
from frugalnas.selection.furthest import FurthestIndex


@SELECTORS.register("dds-coverage")
class CoverageDDSSelector(DDSSelector):
    """:class:`DDSSelector` whose replacement is the typical same-class image worst covered by the
    subset (see the module docstring). Takes ``dds``'s parameters plus ``coverage_quantile`` in
    (0, 1]: the share of each class, nearest its latent centroid first, that replacements come from."""

    name = "dds-coverage"

    def __init__(self, train_ids, train_labels, *, index: FurthestIndex, subset_size=None, seed=0, hardness=0.9,
                 mastery=0.6, warmup_epochs=5, curriculum_stages=0, total_epochs=None, order="curriculum",
                 easy_quantile=None, mastery_rule="accuracy", coverage_quantile=0.9):
        super().__init__(train_ids, train_labels, index=index, subset_size=subset_size, seed=seed, hardness=hardness,
                         mastery=mastery, warmup_epochs=warmup_epochs, curriculum_stages=curriculum_stages,
                         total_epochs=total_epochs, order=order, easy_quantile=easy_quantile,
                         mastery_rule=mastery_rule)
        self.coverage_quantile = check_fraction("coverage_quantile", coverage_quantile)
        rows_of = self.index.row_of
        self._typical: dict[int, np.ndarray] = {}
        for label, ids in self._class_ids.items():
            vectors = self.index.latents[[rows_of(i) for i in ids]]
            distance = np.linalg.norm(vectors - vectors.mean(axis=0), axis=1)
            self._typical[label] = ids[distance <= np.quantile(distance, self.coverage_quantile)]

    def params(self) -> dict:
        return {**super().params(), "coverage_quantile": self.coverage_quantile}

    def replacement(self, easy_id, exclude):
        label = int(self.labels_of([easy_id])[0])
        typical = self._typical[label]
        taken = np.fromiter(exclude, dtype=np.int64, count=len(exclude))
        candidates = typical[~np.isin(typical, taken)]
        if candidates.size == 0:
            return None
        members = self._class_ids[label][np.isin(self._class_ids[label], taken)]
        latents, row = self.index.latents, self.index.row_of
        points = latents[[row(i) for i in candidates]]
        covered = latents[[row(i) for i in members]]
        # squared distance of every candidate to its nearest member, in blocks to bound memory
        nearest = np.full(len(points), np.inf, dtype=np.float64)
        for start in range(0, len(covered), 256):
            block = covered[start:start + 256]
            d = ((points[:, None, :] - block[None, :, :]) ** 2).sum(axis=2)
            np.minimum(nearest, d.min(axis=1), out=nearest)
        return int(candidates[int(np.argmax(nearest))])
