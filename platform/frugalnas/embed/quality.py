"""How well an embedding puts similar images together.

DDS-NAS needs *similar images to have similar embeddings*. The measure used here is label
agreement among nearest neighbours: for each point, the fraction of its k nearest neighbours
that share its label, averaged. Computed on raw pixels it is the baseline an autoencoder's
latents should beat.
"""
from __future__ import annotations

import numpy as np
import torch
from sklearn.neighbors import NearestNeighbors

from frugalnas.embed.training import prepare_images, to_unit


def knn_agreement(vectors: np.ndarray, labels: np.ndarray, k: int) -> float:
    """Mean fraction of each point's ``k`` nearest neighbours (Euclidean, the point itself
    excluded) that share its label.

    ``vectors`` is (N, D), or any (N, ...) array, which is flattened per row (raw pixels).
    A point's exact duplicates count as neighbours; only the point itself is excluded.
    """
    vectors = np.asarray(vectors)
    labels = np.asarray(labels)
    if vectors.ndim < 2:
        raise ValueError(f"vectors must have shape (N, D) or (N, ...), got {vectors.shape}")
    n = len(vectors)
    if labels.shape != (n,):
        raise ValueError(f"labels must have shape ({n},) to match vectors, got {labels.shape}")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= n - 1:
        raise ValueError(f"k must be an integer in [1, {n - 1}] for {n} points, got {k!r}")
    x = vectors.reshape(n, -1).astype(np.float64, copy=False)
    if not np.isfinite(x).all():
        raise ValueError("vectors contain NaN or infinite values")
    # kneighbors() without X returns each indexed point's neighbours, the point itself excluded
    neighbours = NearestNeighbors(n_neighbors=k).fit(x).kneighbors(return_distance=False)
    return float(np.mean(labels[neighbours] == labels[:, None]))


def pixel_vectors(images: np.ndarray, image_size: int) -> np.ndarray:
    """Raw-pixel vectors of uint8 (N, H, W, C) images at ``image_size``, in [0, 1]: the same
    input an autoencoder of that size sees, as float32 (N, C * S * S)."""
    with torch.no_grad():
        x = to_unit(prepare_images(images, image_size))
    return x.reshape(len(x), -1).numpy()
