"""Procedurally generated shapes (seeded): classification labels and bounding boxes in one set.

Each image holds 1-3 filled shapes on a noisy background. The label is the class of the largest
shape; the boxes list every shape, so the same data serves classification and detection.
``shapes`` gives 1,000 images of 32x32; ``shapes:N`` gives N.
"""
from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from frugalnas.errors import DataError
from frugalnas.data.sources.base import SOURCES, Record, Source

SHAPE_CLASSES = ["circle", "square", "triangle", "cross"]
SIZE = 32


def draw_shape(draw: ImageDraw.ImageDraw, kind: str, box: tuple[int, int, int, int], colour) -> None:
    x0, y0, x1, y1 = box
    if kind == "circle":
        draw.ellipse(box, fill=colour)
    elif kind == "square":
        draw.rectangle(box, fill=colour)
    elif kind == "triangle":
        draw.polygon([((x0 + x1) / 2, y0), (x1, y1), (x0, y1)], fill=colour)
    else:  # cross
        wx, wy = max(1, (x1 - x0) // 3), max(1, (y1 - y0) // 3)
        draw.rectangle((x0 + wx, y0, x1 - wx, y1), fill=colour)
        draw.rectangle((x0, y0 + wy, x1, y1 - wy), fill=colour)


def generate(rng: np.random.Generator, size: int = SIZE):
    """One image: (pixels (size, size, 3) uint8, label, boxes [(cls, cx, cy, w, h)])."""
    background = rng.integers(0, 90, size=3)
    noise = rng.normal(0, 12, size=(size, size, 3))
    image = Image.fromarray(np.clip(background + noise, 0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(image)
    boxes, areas = [], []
    for _ in range(int(rng.integers(1, 4))):
        cls = int(rng.integers(len(SHAPE_CLASSES)))
        w, h = (int(v) for v in rng.integers(size // 5, size // 2 + 1, size=2))
        x0, y0 = int(rng.integers(0, size - w)), int(rng.integers(0, size - h))
        colour = tuple(int(c) for c in rng.integers(130, 256, size=3))
        draw_shape(draw, SHAPE_CLASSES[cls], (x0, y0, x0 + w - 1, y0 + h - 1), colour)
        boxes.append((cls, (x0 + w / 2) / size, (y0 + h / 2) / size, w / size, h / size))
        areas.append(w * h)
    label = boxes[int(np.argmax(areas))][0]
    return np.asarray(image), label, boxes


@SOURCES.register("shapes")
class ShapesSource(Source):
    name = "shapes"
    has_boxes = True

    def __init__(self, argument=None, *, seed=0):
        super().__init__(argument, seed=seed)
        self.classes = list(SHAPE_CLASSES)
        try:
            self.count = int(argument) if argument else 1000
        except ValueError:
            raise DataError(f"shapes:N needs a whole number of images, got {argument!r}") from None
        if self.count < 1:
            raise DataError(f"shapes:N needs at least 1 image, got {self.count}")

    @property
    def dataset_name(self):
        return "shapes"

    def records(self):
        rng = np.random.default_rng(self.seed)
        for index in range(self.count):
            pixels, label, boxes = generate(rng)
            yield Record("train", f"shapes#{index}", load=lambda p=pixels: p, label=label, boxes=boxes)
