"""Per-class furthest-neighbour look-up over autoencoder latents.

DDS-NAS replaces an easy image by the image of the same class that is furthest from it in latent
space and not already in the subset. :class:`FurthestIndex` is the interface; each implementation
registers itself in :data:`FURTHEST_INDEXES` under the name used in configs.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Collection

import numpy as np

from frugalnas.registry import Registry

FURTHEST_INDEXES: Registry[type["FurthestIndex"]] = Registry("furthest-neighbour index")


def squared_distances(points: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Squared euclidean distances (float32) from each row of ``points`` to ``q``. Every index
    computes distances with this one expression, so exact indexes agree to the last bit."""
    return np.sum((points - q) ** 2, axis=1)


class FurthestIndex(ABC):
    """Answers: which image of the query's class, outside ``exclude``, is furthest from it?

    Built once from all training images: ``ids`` (N,) int, ``latents`` (N, D) float,
    ``labels`` (N,) int. Queries and answers are image ids, never row positions.
    """

    def __init__(self, ids: np.ndarray, latents: np.ndarray, labels: np.ndarray):
        ids = np.asarray(ids, dtype=np.int64)
        latents = np.asarray(latents, dtype=np.float32)
        labels = np.asarray(labels, dtype=np.int64)
        if latents.ndim != 2 or len(ids) != len(latents) or len(ids) != len(labels):
            raise ValueError(
                f"ids {ids.shape}, latents {latents.shape} and labels {labels.shape} must agree "
                "as (N,), (N, D), (N,)"
            )
        if len(np.unique(ids)) != len(ids):
            raise ValueError("image ids must be unique")
        self.ids, self.latents, self.labels = ids, latents, labels
        self._row = {int(i): r for r, i in enumerate(ids)}

    def row_of(self, image_id: int) -> int:
        try:
            return self._row[int(image_id)]
        except KeyError:
            raise KeyError(f"image id {image_id} is not in the index") from None

    @abstractmethod
    def furthest(self, query_id: int, exclude: Collection[int] = ()) -> int | None:
        """The id of the same-class image furthest from ``query_id`` that is not in ``exclude``
        (the query itself never qualifies); None when every same-class image is excluded."""


@FURTHEST_INDEXES.register("exact")
class ExactFurthest(FurthestIndex):
    """Brute force, vectorised over each class: the reference every other index is measured
    against. O(N_class * D) per query. Equal distances are broken by the smallest id, so every
    exact index gives the same answer."""

    def __init__(self, ids, latents, labels):
        super().__init__(ids, latents, labels)
        self._class_rows = {int(c): np.flatnonzero(self.labels == c) for c in np.unique(self.labels)}

    def furthest(self, query_id, exclude=()):
        q = self.row_of(query_id)
        rows = self._class_rows[int(self.labels[q])]
        d2 = squared_distances(self.latents[rows], self.latents[q])
        excluded = np.isin(self.ids[rows], np.fromiter(exclude, dtype=np.int64, count=len(exclude)))
        excluded |= rows == q
        d2 = np.where(excluded, -np.inf, d2)
        top = d2.max()
        if top == -np.inf:
            return None
        return int(self.ids[rows[d2 == top]].min())
