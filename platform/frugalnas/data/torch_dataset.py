"""A plain PyTorch dataset over a stored split, for small local runs and tests (no Ray needed)."""
from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from frugalnas.data.store import StoredDataset


class ImageSplit(Dataset):
    """Decoded images of one split as float tensors (C, H, W) in [0, 1], with label and id.

    Decodes everything once up front: meant for data that fits in memory. Large data goes through
    Ray Data (:mod:`frugalnas.runtime.data`).
    """

    def __init__(self, dataset: StoredDataset, split: str, *, ids=None, image_size: int | None = None):
        self.ids, images, self.labels = dataset.arrays(split, ids=ids, image_size=image_size)
        self.images = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2))).float().div_(255.0)
        self.position = {int(i): p for p, i in enumerate(self.ids)}

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int):
        return self.images[index], int(self.labels[index]), int(self.ids[index])

    def batch(self, ids) -> tuple[torch.Tensor, torch.Tensor]:
        """(images, labels) tensors for the given ids, in that order."""
        rows = torch.as_tensor([self.position[int(i)] for i in ids], dtype=torch.long)
        return self.images[rows], torch.as_tensor(self.labels[rows.numpy()])
