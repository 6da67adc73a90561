"""MNIST / Fashion-MNIST IDX files, gzipped or not.

Reads whichever of the four standard files are present: ``train-*`` as the train split, ``t10k-*``
as the test split.
"""
from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np

from frugalnas.errors import DataError
from frugalnas.data.sources.base import SOURCES, Record, Source, existing_path

IMAGE_MAGIC, LABEL_MAGIC = 2051, 2049
PAIRS = [("train", "train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
         ("test", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")]


def _find(root: Path, stem: str) -> Path | None:
    for candidate in (root / stem, root / f"{stem}.gz"):
        if candidate.exists():
            return candidate
    return None


def read_idx(path: Path, expected_magic: int) -> tuple[np.ndarray, int]:
    """(the complete items of an IDX file, the item count its header declares); raises ValueError
    describing what is wrong with the file."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        raw = handle.read()
    if len(raw) < 8:
        raise ValueError("file too short for an IDX header")
    magic = struct.unpack(">I", raw[:4])[0]
    if magic != expected_magic:
        raise ValueError(f"magic number {magic}, expected {expected_magic}")
    ndim = raw[3]
    dims = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    body = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    count = int(np.prod(dims[1:])) if ndim > 1 else 1
    complete = len(body) // count
    if complete < dims[0]:
        # a truncated file: keep the complete items, the caller reports the missing ones
        dims = (complete, *dims[1:])
    return body[: dims[0] * count].reshape(dims), struct.unpack(">I", raw[4:8])[0]


@SOURCES.register("mnist")
class MnistSource(Source):
    name = "mnist"
    channels = 1

    def __init__(self, argument=None, *, seed=0):
        super().__init__(argument, seed=seed)
        self.root = existing_path(argument, "mnist")
        self.classes = [str(d) for d in range(10)]
        self.files = [(split, _find(self.root, im), _find(self.root, lb)) for split, im, lb in PAIRS]
        if not any(im or lb for _, im, lb in self.files):
            names = ", ".join(f"{n}[.gz]" for _, *pair in PAIRS for n in pair)
            raise DataError(f"no MNIST IDX files in {self.root}: expected any of {names}")

    def records(self):
        for split, images_path, labels_path in self.files:
            if images_path is None and labels_path is None:
                continue
            if images_path is None or labels_path is None:
                present = images_path or labels_path
                yield Record(split, str(present), problem="IDX images and labels must come in pairs; its partner is missing")
                continue
            try:
                images, declared_images = read_idx(images_path, IMAGE_MAGIC)
                labels, declared_labels = read_idx(labels_path, LABEL_MAGIC)
            except (OSError, ValueError, EOFError) as error:
                yield Record(split, f"{images_path} + {labels_path}", problem=f"unreadable IDX file: {error}")
                continue
            total = max(declared_images, declared_labels, len(images), len(labels))
            for index in range(total):
                where = f"{images_path.name}#{index}"
                if index >= len(images):
                    yield Record(split, where, problem=f"label without image ({images_path.name} holds {len(images)} of {declared_images} images, {len(labels)} labels)")
                elif index >= len(labels):
                    yield Record(split, where, problem=f"image without label ({labels_path.name} holds {len(labels)} labels, {len(images)} images)")
                else:
                    yield Record(split, where, load=lambda p=images[index]: p[:, :, None], label=int(labels[index]))
