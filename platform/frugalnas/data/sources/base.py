"""The source interface: where ingest gets images, labels and boxes from.

A source enumerates :class:`Record` objects in a deterministic order; the position in that order is
the image's stable id. Records are lazy (``load`` decodes the pixels), so ingest catches every corrupt
file in one place and lists it in the card's ``skipped``. Problems a source can see without decoding
(a missing label file, a count mismatch) come as records with ``problem`` set.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from frugalnas.errors import DataError
from frugalnas.registry import Registry

SOURCES: Registry[type["Source"]] = Registry("dataset source")

Box = tuple[int, float, float, float, float]  # (class, centre x, centre y, width, height), in [0, 1]


@dataclass
class Record:
    split: str
    source: str  # file path, or "file#index" for records inside a container file
    load: Callable[[], np.ndarray] | None = None  # returns (H, W, C) uint8 pixels
    label: int | None = None  # class index; None for an image with no class (detection background)
    boxes: list[Box] | None = None  # detection targets; None for classification-only sources
    problem: str | None = None  # set when the record is known bad before decoding


class Source(ABC):
    """One kind of dataset on disk (or generated). Subclasses set ``name``, ``task`` (default task),
    ``classes`` and ``channels`` (1 or 3) in ``__init__`` and enumerate records."""

    name: str
    task: str = "classification"
    classes: list[str]
    channels: int = 3
    has_boxes: bool = False
    accepts_classes: bool = False  # whether a fixed class list can be given (``classes=``, ``--classes``)

    def __init__(self, argument: str | None, *, seed: int = 0):
        self.argument = argument
        self.seed = seed

    @abstractmethod
    def records(self) -> Iterator[Record]: ...

    @property
    def dataset_name(self) -> str:
        return self.name if not self.argument else f"{self.name}-{Path(self.argument).name}"


def existing_path(argument: str | None, source: str) -> Path:
    """The source's path argument, which must exist."""
    if not argument:
        raise DataError(f"source {source!r} needs a path: {source}:PATH")
    path = Path(argument).expanduser()
    if not path.exists():
        raise DataError(f"{source} path not found: {path}")
    return path


def pixels_from_file(path: Path, channels: int) -> Callable[[], np.ndarray]:
    """A loader that decodes an image file with Pillow (fully, so truncated files fail here)."""

    def load() -> np.ndarray:
        from PIL import Image

        with Image.open(path) as image:
            image.load()
            array = np.asarray(image.convert("L" if channels == 1 else "RGB"))
        return array[:, :, None] if channels == 1 else array

    return load


def dominant_class(boxes: list[Box]) -> int | None:
    """The class of the largest box: a detection image's ``label`` (None without boxes, stored as -1)."""
    return max(boxes, key=lambda b: b[3] * b[4])[0] if boxes else None


def parse_source_spec(spec: str) -> tuple[str, str | None]:
    """``"cifar:/data/c10"`` -> ("cifar", "/data/c10"); ``"digits"`` -> ("digits", None)."""
    name, _, argument = spec.partition(":")
    return name, (argument or None)


def make_source(spec: str, *, seed: int = 0, classes: list[str] | None = None) -> Source:
    """The source for ``spec``; ``classes`` fixes the class list of sources that take one."""
    name, argument = parse_source_spec(spec)
    cls = SOURCES.get(name)
    if classes is None:
        return cls(argument, seed=seed)
    if not cls.accepts_classes:
        takers = [n for n in SOURCES.names() if SOURCES.get(n).accepts_classes]
        raise DataError(f"source {name!r} takes its class list from the data; a fixed class list "
                        f"(--classes, dataset.classes) applies to: {', '.join(takers)}")
    return cls(argument, seed=seed, classes=list(classes))
