"""CIFAR-10 / CIFAR-100 "python version" folders (pickled batches), as distributed by their authors.

CIFAR-10: ``batches.meta`` + ``data_batch_1..5`` (train) + ``test_batch``.
CIFAR-100: ``meta`` + ``train`` + ``test`` (fine labels).
"""
from __future__ import annotations

import pickle

import numpy as np

from frugalnas.errors import DataError
from frugalnas.data.sources.base import SOURCES, Record, Source, existing_path

CIFAR10 = {"meta": "batches.meta", "names": b"label_names", "labels": b"labels",
           "files": [("train", f"data_batch_{i}") for i in range(1, 6)] + [("test", "test_batch")]}
CIFAR100 = {"meta": "meta", "names": b"fine_label_names", "labels": b"fine_labels",
            "files": [("train", "train"), ("test", "test")]}


def _unpickle(path):
    with open(path, "rb") as handle:
        return pickle.load(handle, encoding="bytes")


@SOURCES.register("cifar")
class CifarSource(Source):
    name = "cifar"

    def __init__(self, argument=None, *, seed=0):
        super().__init__(argument, seed=seed)
        self.root = existing_path(argument, "cifar")
        if (self.root / CIFAR10["meta"]).exists():
            self.layout = CIFAR10
        elif (self.root / CIFAR100["meta"]).exists():
            self.layout = CIFAR100
        else:
            raise DataError(
                f"{self.root} is not a CIFAR python folder: expected batches.meta (CIFAR-10) or meta (CIFAR-100)"
            )
        try:
            meta = _unpickle(self.root / self.layout["meta"])
            self.classes = [n.decode() if isinstance(n, bytes) else str(n) for n in meta[self.layout["names"]]]
        except Exception as error:
            raise DataError(f"cannot read CIFAR meta file {self.root / self.layout['meta']}: {error}") from None

    def records(self):
        for split, filename in self.layout["files"]:
            path = self.root / filename
            if not path.exists():
                continue  # CIFAR folders may hold only some batches; the card lists the splits found
            try:
                batch = _unpickle(path)
                data = np.asarray(batch[b"data"], dtype=np.uint8)
                labels = list(batch[self.layout["labels"]])
                if data.ndim != 2 or data.shape[1] != 3072:
                    raise ValueError(f"data has shape {data.shape}, expected (N, 3072)")
            except Exception as error:
                yield Record(split, str(path), problem=f"unreadable CIFAR batch: {error}")
                continue
            for index in range(max(len(data), len(labels))):
                where = f"{path}#{index}"
                if index >= len(data):
                    yield Record(split, where, problem=f"label without image ({len(labels)} labels, {len(data)} images)")
                elif index >= len(labels):
                    yield Record(split, where, problem=f"image without label ({len(data)} images, {len(labels)} labels)")
                else:
                    pixels = data[index].reshape(3, 32, 32).transpose(1, 2, 0)
                    yield Record(split, where, load=lambda p=pixels: p, label=int(labels[index]))
