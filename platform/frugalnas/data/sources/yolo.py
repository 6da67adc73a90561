"""A YOLO detection dataset: ``data.yaml`` (class ``names``), ``images/<split>/`` and
``labels/<split>/<image stem>.txt`` with one ``class cx cy w h`` line (normalised to [0, 1]) per object.

As in ultralytics, an image without a label file, or with an empty one, is a *background* image:
kept, with no boxes (stored label -1), and trained on as an image without objects; ingest counts
them per split in the card's ``background_images``. A split folder ``images/<split>/`` needs its
``labels/<split>/`` folder, though: without it every image would silently become background.
"""
from __future__ import annotations

import yaml

from frugalnas.errors import DataError
from frugalnas.data.sources.base import SOURCES, Record, Source, dominant_class, existing_path, pixels_from_file
from frugalnas.data.sources.folder import IMAGE_SUFFIXES

SPLIT_ALIASES = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}
EDGE_TOLERANCE = 1e-3  # rounding in exported label files puts box edges a hair outside [0, 1]


def parse_label_file(text: str, num_classes: int) -> list[tuple[int, float, float, float, float]]:
    """Boxes from a YOLO label file; ValueError naming the line for anything malformed."""
    boxes = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split()
        if len(fields) != 5:
            raise ValueError(f"line {number}: expected 'class cx cy w h', got {line.strip()!r}")
        try:
            cls = int(fields[0])
            cx, cy, w, h = (float(v) for v in fields[1:])
        except ValueError:
            raise ValueError(f"line {number}: not numbers: {line.strip()!r}") from None
        if not 0 <= cls < num_classes:
            raise ValueError(f"line {number}: label out of range: class {cls}, allowed 0..{num_classes - 1}")
        lo, hi = -EDGE_TOLERANCE, 1 + EDGE_TOLERANCE
        if w <= 0 or h <= 0 or cx - w / 2 < lo or cy - h / 2 < lo or cx + w / 2 > hi or cy + h / 2 > hi:
            raise ValueError(f"line {number}: box outside the image: {line.strip()!r} (normalised coordinates must lie in [0, 1])")
        boxes.append((cls, cx, cy, w, h))
    return boxes


@SOURCES.register("yolo")
class YoloSource(Source):
    name = "yolo"
    task = "detection"
    has_boxes = True

    def __init__(self, argument=None, *, seed=0):
        super().__init__(argument, seed=seed)
        self.root = existing_path(argument, "yolo")
        config = self.root / "data.yaml" if self.root.is_dir() else self.root
        if self.root.is_file():
            self.root = self.root.parent
        if not config.exists():
            raise DataError(f"no data.yaml in {self.root}: a YOLO dataset needs data.yaml with class names")
        try:
            data = yaml.safe_load(config.read_text()) or {}
        except yaml.YAMLError as error:
            raise DataError(f"cannot parse {config}: {error}") from None
        names = data.get("names")
        if isinstance(names, dict):
            names = [names[k] for k in sorted(names)]
        if not isinstance(names, list) or not names:
            raise DataError(f"{config}: 'names' must be a non-empty list or {{index: name}} mapping, got {names!r}")
        self.classes = [str(n) for n in names]
        images = self.root / "images"
        if not images.is_dir():
            raise DataError(f"no images/ folder in {self.root}: expected images/<split>/ and labels/<split>/")
        self.splits = {d.name: SPLIT_ALIASES.get(d.name) for d in sorted(images.iterdir()) if d.is_dir()}
        unknown = [name for name, split in self.splits.items() if split is None]
        if unknown:
            raise DataError(f"unknown split folder(s) {unknown} in {images}: allowed {sorted(SPLIT_ALIASES)}")
        unlabelled = [name for name in self.splits if not (self.root / "labels" / name).is_dir()]
        if unlabelled:
            raise DataError(f"no labels/{unlabelled[0]}/ folder in {self.root} for images/{unlabelled[0]}/: a YOLO "
                            "split needs its label folder (an image without a label file there is a background image)")

    def records(self):
        for folder, split in self.splits.items():
            image_dir, label_dir = self.root / "images" / folder, self.root / "labels" / folder
            image_stems = set()
            for path in sorted(p for p in image_dir.rglob("*") if p.is_file()):
                image_stems.add(path.relative_to(image_dir).with_suffix(""))
                if path.suffix.lower() not in IMAGE_SUFFIXES:
                    yield Record(split, str(path), problem="not an image file")
                    continue
                label_path = label_dir / path.relative_to(image_dir).with_suffix(".txt")
                try:
                    # no label file: a background image, as ultralytics reads it
                    boxes = parse_label_file(label_path.read_text(), len(self.classes)) if label_path.exists() else []
                except (ValueError, UnicodeDecodeError) as error:
                    yield Record(split, str(label_path), problem=str(error))
                    continue
                yield Record(split, str(path), load=pixels_from_file(path, self.channels), label=dominant_class(boxes),
                             boxes=boxes)
            if label_dir.is_dir():
                for orphan in sorted(p for p in label_dir.rglob("*.txt") if p.relative_to(label_dir).with_suffix("") not in image_stems):
                    yield Record(split, str(orphan), problem="label file without an image")
