"""Reading a dataset folder back without Ray: the card, Arrow tables, decoded arrays, a PyTorch dataset."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from frugalnas.data.codecs import make_codec
from frugalnas.data.ingest import _resize
from frugalnas.data.schema import CARD_FILE, SPLIT_ORDER
from frugalnas.errors import DataError


class StoredDataset:
    """A dataset folder written by :func:`frugalnas.data.ingest`."""

    def __init__(self, root: str | Path):
        self.root = Path(root).expanduser().resolve()
        card_path = self.root / CARD_FILE
        if not card_path.exists():
            what = "does not exist" if not self.root.exists() else f"has no {CARD_FILE}"
            raise DataError(f"dataset folder {self.root} {what}: create it with `frugalnas ingest SOURCE --out {self.root}`")
        try:
            self.card = json.loads(card_path.read_text())
        except json.JSONDecodeError as error:
            raise DataError(f"corrupt dataset card {card_path}: {error}") from None
        self.codec = make_codec(self.card["codec"], self.card["quality"])
        self._labels_cache: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    @property
    def classes(self) -> list[str]:
        return self.card["classes"]

    @property
    def channels(self) -> int:
        return int(self.card["channels"])

    def split_names(self) -> list[str]:
        return [s for s in SPLIT_ORDER if s in self.card["splits"]]

    def split_files(self, split: str) -> list[Path]:
        if split not in self.card["splits"]:
            raise DataError(f"dataset {self.root} has no split {split!r}: it has {', '.join(self.split_names())}")
        return sorted((self.root / split).glob("part-*.parquet"))

    def table(self, split: str, columns: list[str] | None = None) -> pa.Table:
        return pq.read_table(self.split_files(split), columns=columns)

    def labels(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """(ids, labels) of a split without decoding any image."""
        if split not in self._labels_cache:
            table = self.table(split, ["id", "label"])
            self._labels_cache[split] = (table["id"].to_numpy(), table["label"].to_numpy().astype(np.int64))
        return self._labels_cache[split]

    def decode(self, images, heights, widths, image_size: int | None = None) -> np.ndarray:
        """Decode encoded images into one (N, S, S, C) uint8 array, resizing to ``image_size`` if given."""
        size = image_size or self.card.get("image_size")
        pixels = []
        for data, height, width in zip(images, heights, widths):
            array = self.codec.decode(data, int(height), int(width), self.channels)
            if size is None and pixels and array.shape != pixels[0].shape:
                raise DataError(f"images in {self.root} differ in size: pass an image size, or re-ingest with --image-size")
            pixels.append(_resize(array, size))
        if not pixels:
            return np.zeros((0, size or 1, size or 1, self.channels), dtype=np.uint8)
        return np.stack(pixels)

    def arrays(self, split: str, *, ids=None, image_size: int | None = None):
        """(ids int64 (N,), images uint8 (N, H, W, C), labels int64 (N,)) of a split, decoded.

        With ``ids``, only those images, in that order (an unknown id is an error naming it)."""
        table = self.table(split, ["id", "image", "label", "height", "width"])
        if ids is not None:
            table = take_ids(table, ids, where=f"split {split!r} of {self.root}")
        images = self.decode(table["image"].to_pylist(), table["height"].to_numpy(), table["width"].to_numpy(), image_size)
        return table["id"].to_numpy(), images, table["label"].to_numpy().astype(np.int64)


def take_ids(table: pa.Table, ids, where: str) -> pa.Table:
    """Rows of ``table`` with the given ids, in the given order."""
    ids = np.asarray(ids, dtype=np.int64)
    all_ids = table["id"].to_numpy()
    order = np.argsort(all_ids, kind="stable")
    positions = np.searchsorted(all_ids, ids, sorter=order)
    positions = np.clip(positions, 0, len(all_ids) - 1)
    rows = order[positions]
    missing = ids[all_ids[rows] != ids] if len(all_ids) else ids
    if len(missing):
        raise DataError(f"image id(s) {missing[:10].tolist()} not in {where}")
    return table.take(pa.array(rows))


def open_dataset(root: str | Path) -> StoredDataset:
    return StoredDataset(root)
