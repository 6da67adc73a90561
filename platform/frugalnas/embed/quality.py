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


# Detection data: an image has a *set* of labels (the classes of its boxes), so agreement between two
# images is the Jaccard index of their label sets, |A & B| / |A | B| (two empty sets agree: 1).

def label_set_matrix(boxes: list, num_classes: int) -> np.ndarray:
    """bool (N, num_classes): which classes each image's boxes hold. ``boxes`` is one list per
    image of ``(cls, cx, cy, w, h)`` tuples or ``{"cls": ...}`` mappings (a dataset's boxes column)."""
    sets = np.zeros((len(boxes), num_classes), dtype=bool)
    for i, image_boxes in enumerate(boxes):
        for box in image_boxes or ():
            sets[i, int(box["cls"] if isinstance(box, dict) else box[0])] = True
    return sets


def jaccard(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise Jaccard index of bool label-set rows ``a`` and ``b`` (broadcasting); 1 where both are empty."""
    union = np.logical_or(a, b).sum(-1)
    inter = np.logical_and(a, b).sum(-1)
    return np.where(union == 0, 1.0, inter / np.maximum(union, 1))


def _checked(vectors: np.ndarray, sets: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors)
    n = len(vectors)
    if vectors.ndim < 2 or sets.shape[:1] != (n,) or sets.ndim != 2:
        raise ValueError(f"vectors (N, ...) and label sets (N, C) must agree, got {vectors.shape} and {sets.shape}")
    if n < 2:
        raise ValueError(f"need at least 2 images, got {n}")
    x = vectors.reshape(n, -1).astype(np.float64, copy=False)
    if not np.isfinite(x).all():
        raise ValueError("vectors contain NaN or infinite values")
    return x


def knn_label_jaccard(vectors: np.ndarray, sets: np.ndarray, k: int) -> float:
    """Mean Jaccard of label sets between each image and each of its ``k`` nearest neighbours
    (Euclidean, the image itself excluded)."""
    x = _checked(vectors, sets)
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= len(x) - 1:
        raise ValueError(f"k must be an integer in [1, {len(x) - 1}] for {len(x)} points, got {k!r}")
    neighbours = NearestNeighbors(n_neighbors=k).fit(x).kneighbors(return_distance=False)
    return float(jaccard(sets[:, None, :], sets[neighbours]).mean())


CHUNK = 1024  # rows of a pairwise computation at a time, so memory stays O(CHUNK * N)


def furthest_label_jaccard(vectors: np.ndarray, sets: np.ndarray, groups: np.ndarray | None = None) -> float | None:
    """Mean Jaccard of label sets between each image and its furthest neighbour (exact, ties to the
    lowest row), searched among all images or, with ``groups``, among the images of its own group
    (DDS swaps an image for the furthest image of its dominant class). Images alone in their group
    are left out; None when every image is."""
    x = _checked(vectors, sets)
    groups = np.zeros(len(x), dtype=np.int64) if groups is None else np.asarray(groups)
    if groups.shape != (len(x),):
        raise ValueError(f"groups must have shape ({len(x)},), got {groups.shape}")
    values = []
    for group in np.unique(groups):
        rows = np.flatnonzero(groups == group)
        if len(rows) < 2:
            continue
        points = x[rows]
        for start in range(0, len(rows), CHUNK):
            chunk = points[start:start + CHUNK]
            d2 = (chunk ** 2).sum(1)[:, None] + (points ** 2).sum(1)[None, :] - 2 * chunk @ points.T
            d2[np.arange(len(chunk)), np.arange(start, start + len(chunk))] = -np.inf
            far = rows[np.argmax(d2, axis=1)]
            values.append(jaccard(sets[rows[start:start + CHUNK]], sets[far]))
    return float(np.concatenate(values).mean()) if values else None


def random_label_jaccard(sets: np.ndarray) -> float:
    """Mean Jaccard of label sets over all pairs of distinct images: what a random neighbour gives."""
    n = len(sets)
    if n < 2:
        raise ValueError(f"need at least 2 images, got {n}")
    s = np.asarray(sets, dtype=np.float64)
    sizes = s.sum(1)
    total = 0.0
    for start in range(0, n, CHUNK):
        inter = s[start:start + CHUNK] @ s.T
        union = sizes[start:start + CHUNK, None] + sizes[None, :] - inter
        j = np.where(union == 0, 1.0, inter / np.maximum(union, 1))
        total += j.sum() - np.trace(j[:, start:start + CHUNK])  # an image is not its own pair
    return float(total / (n * (n - 1)))
