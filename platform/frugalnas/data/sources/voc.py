"""A Pascal VOC detection dataset: ``Annotations/<stem>.xml`` (one per image, boxes as pixel
``xmin ymin xmax ymax``), ``JPEGImages/<stem>.<ext>`` and, when present, the split lists
``ImageSets/Main/{train,val,test}.txt`` (one stem per line; ``trainval.txt`` stands for the train
split when neither ``train.txt`` nor ``val.txt`` exists).

With split lists, the lists define the dataset: only listed stems are read (VOC2012's JPEGImages
holds more images than its detection lists). Without them every annotated image is in ``train`` and
ingest carves val/test from it.

Classes are the sorted object names found in the annotations (VOC's own 20 classes are listed in
alphabetical order too), or a fixed list given with ``classes=`` (``--classes``), which also fixes
their order; an object whose name is not in that list is then a bad record.

Boxes become YOLO-normalised ``(cls, cx, cy, w, h)`` against the image's real size (read from the
file, and checked against the annotation's ``<size>``). Pixel coordinates are taken as edges in
[0, W]; a box reaching up to one pixel past an edge is clipped (VOC counts pixels from 1, so its
``xmax`` may equal W, and 0-based exporters write ``xmin`` 0). ``difficult`` and ``truncated``
objects are kept as ordinary objects (YOLO labels have no such flag).

The record is the image: any bad object (unknown class, no box, a box that is degenerate or outside
the image, a coordinate that is not a number) skips the whole image, and the reason names the
object, as the ``yolo`` source does with a bad label line. So do a missing or unreadable annotation
or image file, a listed stem without files and a stem listed in two splits. An annotation with no
objects is a background image, kept with no boxes.
"""
from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

from frugalnas.data.sources.base import SOURCES, Record, Source, dominant_class, existing_path, pixels_from_file
from frugalnas.data.sources.folder import IMAGE_SUFFIXES
from frugalnas.errors import DataError

SPLIT_FILES = ("train", "val", "test")
EDGE_TOLERANCE_PX = 1.0  # VOC's 1-based coordinates reach W; 0-based exporters start at 0


@dataclass
class _Object:
    name: str
    corners: tuple[str | None, ...]  # xmin, ymin, xmax, ymax as written


@dataclass
class _Annotation:
    size: tuple[int, int] | None  # (width, height) from <size>, None when absent or zero
    objects: list[_Object]


def parse_annotation(path: Path) -> _Annotation:
    """The objects and declared size of a VOC XML file; ValueError for anything unreadable."""
    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError) as error:
        raise ValueError(f"unreadable annotation: {error}") from None
    if root.tag != "annotation":
        raise ValueError(f"unreadable annotation: root element is <{root.tag}>, expected <annotation>")
    size = None
    width, height = root.findtext("size/width"), root.findtext("size/height")
    try:
        if width and height and int(float(width)) > 0 and int(float(height)) > 0:
            size = (int(float(width)), int(float(height)))
    except ValueError:
        raise ValueError(f"annotation <size> is not a number: width {width!r}, height {height!r}") from None
    objects = []
    for element in root.findall("object"):
        box = element.find("bndbox")
        corners = tuple(None if box is None else box.findtext(k) for k in ("xmin", "ymin", "xmax", "ymax"))
        objects.append(_Object((element.findtext("name") or "").strip(), corners))
    return _Annotation(size, objects)


def voc_boxes(annotation: _Annotation, image_size: tuple[int, int], class_index: dict[str, int],
              ) -> list[tuple[int, float, float, float, float]]:
    """YOLO-normalised boxes of an annotation for an image of ``image_size`` (width, height);
    ValueError naming the first bad object."""
    width, height = image_size
    if annotation.size is not None and annotation.size != image_size:
        raise ValueError(f"annotation size differs from the image: {annotation.size[0]}x{annotation.size[1]} in the "
                         f"annotation, {width}x{height} in the image, so its boxes cannot be placed")
    boxes = []
    for number, obj in enumerate(annotation.objects, start=1):
        what = f"object {number} ({obj.name or 'no name'})"
        if not obj.name:
            raise ValueError(f"object without a class name: {what} has no <name>")
        if obj.name not in class_index:
            raise ValueError(f"unknown class: {what}, allowed: {', '.join(class_index)}")
        if any(v is None for v in obj.corners):
            raise ValueError(f"object without a box: {what} has no <bndbox> with xmin, ymin, xmax, ymax")
        try:
            x0, y0, x1, y1 = (float(v) for v in obj.corners)
        except ValueError:
            raise ValueError(f"box coordinates are not numbers: {what}: {obj.corners}") from None
        shown = f"xmin {obj.corners[0]} ymin {obj.corners[1]} xmax {obj.corners[2]} ymax {obj.corners[3]}"
        tol = EDGE_TOLERANCE_PX
        if x0 < -tol or y0 < -tol or x1 > width + tol or y1 > height + tol:
            raise ValueError(f"box outside the image: {what}: {shown} in a {width}x{height} image")
        x0, x1 = max(0.0, x0), min(float(width), x1)
        y0, y1 = max(0.0, y0), min(float(height), y1)
        if x1 <= x0 or y1 <= y0:
            raise ValueError(f"degenerate box (zero or negative width or height): {what}: {shown}")
        boxes.append((class_index[obj.name], (x0 + x1) / 2 / width, (y0 + y1) / 2 / height,
                      (x1 - x0) / width, (y1 - y0) / height))
    return boxes


def _image_size(path: Path) -> tuple[int, int]:
    """(width, height) from the image header, without decoding the pixels."""
    from PIL import Image

    with Image.open(path) as image:
        return image.size


@SOURCES.register("voc")
class VocSource(Source):
    name = "voc"
    task = "detection"
    has_boxes = True
    accepts_classes = True

    def __init__(self, argument=None, *, seed=0, classes: list[str] | None = None):
        super().__init__(argument, seed=seed)
        self.root = existing_path(argument, "voc")
        annotations = self.root / "Annotations"
        if not annotations.is_dir():
            inside = sorted(d.name for d in self.root.iterdir() if (d / "Annotations").is_dir()) if self.root.is_dir() else []
            hint = f"; it is in {', '.join(str(self.root / d) for d in inside)}: pass that folder" if inside else ""
            raise DataError(f"no Annotations/ folder in {self.root}: a Pascal VOC dataset has Annotations/*.xml, "
                            f"JPEGImages/ and optionally ImageSets/Main/{{train,val,test}}.txt{hint}")
        self.images = self._image_files()
        self.annotation_files = {p.stem: p for p in sorted(annotations.glob("*.xml"))}
        self.split_lists = self._split_lists()
        self.parsed: dict[str, _Annotation | str] = {}  # stem -> annotation, or why it is unreadable
        for stem in self._stems_in_use():
            if stem in self.annotation_files:
                try:
                    self.parsed[stem] = parse_annotation(self.annotation_files[stem])
                except ValueError as error:
                    self.parsed[stem] = str(error)
        if classes is not None:
            classes = [str(c).strip() for c in classes]
            if not classes or any(not c for c in classes) or len(set(classes)) != len(classes):
                raise DataError(f"voc class list must be non-empty, unique names, got {classes}")
            self.classes = classes
        else:
            self.classes = sorted({o.name for a in self.parsed.values() if isinstance(a, _Annotation)
                                   for o in a.objects if o.name})
            if not self.classes:
                raise DataError(f"no named objects in the annotations of {self.root}: the class list cannot be "
                                "taken from them (pass the classes explicitly)")

    def _image_files(self) -> dict[str, list[Path]]:
        folder = self.root / "JPEGImages"
        if not folder.is_dir():
            raise DataError(f"no JPEGImages/ folder in {self.root}: a Pascal VOC dataset keeps its images there")
        images: dict[str, list[Path]] = {}
        for path in sorted(p for p in folder.iterdir() if p.is_file()):
            images.setdefault(path.stem, []).append(path)
        return images

    def _split_lists(self) -> dict[str, tuple[Path, list[str]]] | None:
        """split -> (list file, stems in file order); None when the dataset has no split lists."""
        main = self.root / "ImageSets" / "Main"
        files = {s: main / f"{s}.txt" for s in SPLIT_FILES if (main / f"{s}.txt").is_file()}
        if not files.get("train") and not files.get("val") and (main / "trainval.txt").is_file():
            files = {"train": main / "trainval.txt", **files}
        if not files:
            return None
        # a line may carry more columns (VOC's per-class lists: "stem  1"); the stem is the first
        return {split: (path, [line.split()[0] for line in path.read_text().splitlines() if line.strip()])
                for split, path in files.items()}

    def _stems_in_use(self) -> list[str]:
        if self.split_lists is None:
            return sorted(set(self.images) | set(self.annotation_files))
        return sorted({stem for _, stems in self.split_lists.values() for stem in stems})

    def records(self):
        class_index = {name: i for i, name in enumerate(self.classes)}
        if self.split_lists is None:
            for stem in self._stems_in_use():
                yield self._record("train", stem, stem, class_index)
            return
        seen: dict[str, str] = {}
        for split, (list_path, stems) in self.split_lists.items():
            for stem in stems:
                where = f"{list_path}#{stem}"
                if stem in seen:
                    yield Record(split, where, problem=f"stem listed twice: already in {seen[stem]}")
                    continue
                seen[stem] = f"{list_path.name}"
                yield self._record(split, stem, where, class_index)

    def _record(self, split: str, stem: str, where: str, class_index: dict[str, int]) -> Record:
        images, annotation_path = self.images.get(stem, []), self.annotation_files.get(stem)
        if not images and annotation_path is None:
            return Record(split, where, problem="listed stem without files: no image in JPEGImages/ and no "
                                                "annotation in Annotations/")
        if not images:
            return Record(split, str(annotation_path), problem="annotation without an image in JPEGImages/")
        if len(images) > 1:
            return Record(split, str(images[0]), problem=f"several image files for one stem: {[p.name for p in images]}")
        image = images[0]
        if image.suffix.lower() not in IMAGE_SUFFIXES:
            return Record(split, str(image), problem=f"not an image file (allowed suffixes: {', '.join(sorted(IMAGE_SUFFIXES))})")
        if annotation_path is None:
            return Record(split, str(image), problem=f"image without an annotation: no Annotations/{stem}.xml")
        annotation = self.parsed[stem]
        if isinstance(annotation, str):
            return Record(split, str(annotation_path), problem=annotation)
        try:
            size = _image_size(image)
        except Exception as error:  # a file Pillow cannot even open is a corrupt image
            return Record(split, str(image), problem=f"unreadable image: {type(error).__name__}: {error}")
        try:
            boxes = voc_boxes(annotation, size, class_index)
        except ValueError as error:
            return Record(split, str(annotation_path), problem=str(error))
        return Record(split, str(image), load=pixels_from_file(image, self.channels), label=dominant_class(boxes),
                      boxes=boxes)
