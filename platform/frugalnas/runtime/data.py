"""Reading a stored dataset through Ray Data: decoding runs in ``map_batches`` on Ray workers, and an
epoch's subset is split into class-balanced, curriculum-ordered shards, one per training worker."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import ray

from frugalnas.data.shards import curriculum_shards
from frugalnas.data.store import open_dataset, take_ids

COLUMNS = ["id", "image", "label", "height", "width"]


class DecodeBatch:
    """``map_batches`` function: encoded rows -> ``{"id", "image" (B, C, H, W) float32 in [0, 1], "label"}``."""

    def __init__(self, dataset_dir: str, image_size: int | None = None):
        self.dataset_dir, self.image_size = dataset_dir, image_size
        self._dataset = None

    def __call__(self, batch: dict) -> dict:
        if self._dataset is None:  # opened lazily on the worker, not pickled from the driver
            self._dataset = open_dataset(self.dataset_dir)
        pixels = self._dataset.decode(batch["image"], batch["height"], batch["width"], self.image_size)
        return {
            "id": np.asarray(batch["id"], dtype=np.int64),
            "image": (pixels.transpose(0, 3, 1, 2).astype(np.float32) / 255.0),
            "label": np.asarray(batch["label"], dtype=np.int64),
        }


def read_split(dataset_dir: str | Path, split: str, *, image_size: int | None = None,
               batch_size: int = 256) -> ray.data.Dataset:
    """A whole split as a Ray Dataset of decoded tensors (lazy; decoding happens on read)."""
    stored = open_dataset(dataset_dir)
    files = [str(p) for p in stored.split_files(split)]
    return ray.data.read_parquet(files, columns=COLUMNS).map_batches(
        DecodeBatch(str(stored.root), image_size), batch_format="numpy", batch_size=batch_size)


def subset_shards(dataset_dir: str | Path, split: str, ordered_ids, num_workers: int, *,
                  image_size: int | None = None, batch_size: int = 256) -> list[ray.data.Dataset]:
    """One Ray Dataset per worker for an epoch's subset given in curriculum order.

    Each shard holds a class-balanced share of the subset and follows the same curriculum order
    (:func:`frugalnas.data.curriculum_shards`); reading a shard yields its rows in that order.
    """
    stored = open_dataset(dataset_dir)
    table = stored.table(split, COLUMNS)
    ordered = take_ids(table, ordered_ids, where=f"split {split!r} of {stored.root}")
    shards = curriculum_shards(ordered["id"].to_numpy(), ordered["label"].to_numpy(), num_workers)
    decode = DecodeBatch(str(stored.root), image_size)
    datasets = []
    for shard_ids in shards:
        rows = take_ids(ordered, shard_ids, where="the subset")
        datasets.append(ray.data.from_arrow(rows).map_batches(decode, batch_format="numpy", batch_size=batch_size))
    return datasets


def preserve_order() -> None:
    """Make Ray Data keep row order through the pipeline (the curriculum order matters)."""
    ray.data.DataContext.get_current().execution_options.preserve_order = True
