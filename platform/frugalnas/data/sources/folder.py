"""An image folder with one sub-folder per class; ``train/``, ``val/``, ``test/`` sub-folders as splits
when present (``ROOT/train/cat/1.jpg``), else the whole folder is the train split (``ROOT/cat/1.jpg``)."""
from __future__ import annotations

from pathlib import Path

from frugalnas.errors import DataError
from frugalnas.data.sources.base import SOURCES, Record, Source, existing_path, pixels_from_file

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".ppm", ".pgm"}
SPLITS = ("train", "val", "test")


@SOURCES.register("folder")
class FolderSource(Source):
    name = "folder"

    def __init__(self, argument=None, *, seed=0):
        super().__init__(argument, seed=seed)
        self.root = existing_path(argument, "folder")
        if not self.root.is_dir():
            raise DataError(f"folder source must be a directory: {self.root}")
        split_dirs = {s: self.root / s for s in SPLITS if (self.root / s).is_dir()}
        self.split_dirs = split_dirs or {"train": self.root}
        names = {d.name for split_dir in self.split_dirs.values() for d in split_dir.iterdir() if d.is_dir()}
        if not names:
            raise DataError(f"no class sub-folders in {self.root}: expected ROOT/<class>/<image> or ROOT/<split>/<class>/<image>")
        self.classes = sorted(names)

    def records(self):
        index = {name: i for i, name in enumerate(self.classes)}
        for split, split_dir in self.split_dirs.items():
            for entry in sorted(split_dir.iterdir()):
                if not entry.is_dir():
                    yield Record(split, str(entry), problem="file outside a class sub-folder")
                    continue
                for path in sorted(p for p in entry.rglob("*") if p.is_file()):
                    if path.suffix.lower() not in IMAGE_SUFFIXES:
                        allowed = ", ".join(sorted(IMAGE_SUFFIXES))
                        yield Record(split, str(path), problem=f"not an image file (allowed suffixes: {allowed})")
                    else:
                        yield Record(split, str(path), load=pixels_from_file(path, self.channels), label=index[entry.name])
