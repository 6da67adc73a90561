"""Splitting an epoch's subset across data-parallel workers without breaking the curriculum.

Sorting a subset by difficulty and then cutting it into N contiguous pieces gives one worker all the
easy images and another all the hard ones. Instead, each class's images are dealt round-robin in
curriculum order, so every worker gets a class-balanced share that follows the same easy-to-hard order.
"""
from __future__ import annotations

import numpy as np


def curriculum_shards(ids, labels, num_workers: int) -> list[np.ndarray]:
    """Split ``ids`` (in curriculum order, with their ``labels``) into ``num_workers`` shards.

    Every shard keeps the curriculum order of ``ids``; each class's images are split as evenly as
    possible (counts differ by at most one), and shard sizes differ by at most one.
    """
    ids = np.asarray(ids, dtype=np.int64)
    labels = np.asarray(labels, dtype=np.int64)
    if num_workers < 1:
        raise ValueError(f"num_workers must be >= 1, got {num_workers}")
    if len(ids) != len(labels):
        raise ValueError(f"{len(ids)} ids but {len(labels)} labels")
    worker_of = np.empty(len(ids), dtype=np.int64)
    next_worker = 0  # carried across classes so leftovers spread over workers, keeping sizes within one
    for label in np.unique(labels):
        positions = np.flatnonzero(labels == label)  # already in curriculum order
        worker_of[positions] = (next_worker + np.arange(len(positions))) % num_workers
        next_worker = (next_worker + len(positions)) % num_workers
    return [ids[worker_of == w] for w in range(num_workers)]
