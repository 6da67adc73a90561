"""Writing a stored detection data set back out as a YOLO-format folder for ultralytics' trainer.

::

    OUT/images/<split>/<id>.<ext>   the stored image bytes as they are (JPEG/PNG/WebP; raw pixels as PNG)
    OUT/labels/<split>/<id>.txt     one 'class cx cy w h' line per box (empty file: a background image)
    OUT/data.yaml                   absolute paths, class names: what ultralytics' trainer reads
    OUT/export.json                 which dataset card it was written from (so it is reused, not rewritten)

Files are named by the stored image id, so every file name is unique across splits (ultralytics keys
per-image metrics by file name) and a path maps back to its id. Training on a different subset each
epoch uses image lists (:func:`write_image_list`): ultralytics accepts a ``.txt`` of image paths
wherever it takes a folder, and finds each label by replacing ``/images/`` with ``/labels/``.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterable

import numpy as np
import yaml

from frugalnas.data.codecs import PngCodec
from frugalnas.data.schema import CARD_FILE
from frugalnas.data.store import StoredDataset, open_dataset
from frugalnas.errors import DataError

EXPORT_FILE = "export.json"
EXTENSIONS = {"jpeg": ".jpg", "png": ".png", "webp": ".webp"}  # stored bytes written as they are
EXPORT_VERSION = 1


class YoloExport:
    """A YOLO folder written by :func:`export_yolo`: paths of its images and the ids behind them."""

    def __init__(self, root: str | Path):
        self.root = Path(root).resolve()
        info_path = self.root / EXPORT_FILE
        if not info_path.exists():
            raise DataError(f"{self.root} is not a YOLO folder written by frugalnas (no {EXPORT_FILE})")
        self.info = json.loads(info_path.read_text())
        self.extension = self.info["extension"]
        self.data_yaml = self.root / "data.yaml"

    @property
    def splits(self) -> list[str]:
        return list(self.info["splits"])

    def image_file(self, split: str, image_id: int) -> Path:
        return self.root / "images" / split / f"{int(image_id)}{self.extension}"

    def image_files(self, split: str, ids: Iterable[int]) -> list[Path]:
        return [self.image_file(split, i) for i in ids]

    @staticmethod
    def id_of(path: str | Path) -> int:
        """The stored image id of an exported image (its file name)."""
        return int(Path(path).stem)


def card_digest(dataset: StoredDataset) -> str:
    return hashlib.sha256((dataset.root / CARD_FILE).read_bytes()).hexdigest()


def label_lines(boxes) -> str:
    """YOLO label text of a stored row's boxes (None or empty: a background image, empty text)."""
    return "".join(f"{int(b['cls'])} {b['cx']:.6f} {b['cy']:.6f} {b['w']:.6f} {b['h']:.6f}\n" for b in boxes or [])


def export_yolo(dataset: str | Path | StoredDataset, out: str | Path | None = None, *,
                splits: Iterable[str] | None = None) -> YoloExport:
    """Write ``dataset`` (a stored detection data set) as a YOLO folder at ``out`` (default
    ``DATASET/yolo``); returns it. An export already written from the same dataset card is reused.

    Written to a temporary folder beside ``out`` and renamed when complete, so a reader (or a second
    process exporting at the same time) never sees half a folder.
    """
    dataset = dataset if isinstance(dataset, StoredDataset) else open_dataset(dataset)
    if dataset.card["task"] != "detection":
        raise DataError(f"{dataset.root} is a {dataset.card['task']} dataset: only detection data sets (with boxes) "
                        "can be written as a YOLO folder")
    splits = list(splits) if splits is not None else dataset.split_names()
    unknown = [s for s in splits if s not in dataset.card["splits"]]
    if unknown:
        raise DataError(f"dataset {dataset.root} has no split(s) {unknown}: it has {', '.join(dataset.split_names())}")
    out = Path(out).expanduser().resolve() if out else dataset.root / "yolo"
    digest = card_digest(dataset)
    if (out / EXPORT_FILE).exists():
        info = json.loads((out / EXPORT_FILE).read_text())
        if info.get("card_sha256") == digest and info.get("version") == EXPORT_VERSION and set(splits) <= set(info["splits"]):
            return YoloExport(out)
        if not (out / "data.yaml").exists():
            raise DataError(f"{out} exists but is not a complete YOLO export; remove it")
    elif out.exists() and any(out.iterdir()):
        raise DataError(f"output folder {out} exists and is not empty: choose another folder")

    codec = dataset.card["codec"]
    extension = EXTENSIONS.get(codec, ".png")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        counts = {}
        for split in splits:
            image_dir, label_dir = staging / "images" / split, staging / "labels" / split
            image_dir.mkdir(parents=True)
            label_dir.mkdir(parents=True)
            table = dataset.table(split, ["id", "image", "boxes", "height", "width"])
            ids = table["id"].to_numpy()
            for image_id, data, boxes, height, width in zip(ids, table["image"].to_pylist(), table["boxes"].to_pylist(),
                                                            table["height"].to_numpy(), table["width"].to_numpy()):
                if codec not in EXTENSIONS:  # raw pixels: written losslessly as PNG
                    pixels = dataset.codec.decode(data, int(height), int(width), dataset.channels)
                    data = PngCodec().encode(pixels)
                (image_dir / f"{int(image_id)}{extension}").write_bytes(data)
                (label_dir / f"{int(image_id)}.txt").write_text(label_lines(boxes))
            counts[split] = int(len(ids))
        data_yaml = {"path": str(out), **{split: str(out / "images" / split) for split in splits},
                     "nc": len(dataset.classes), "names": dict(enumerate(dataset.classes))}
        (staging / "data.yaml").write_text(
            "# written by frugalnas from " + str(dataset.root) + "\n" + yaml.safe_dump(data_yaml, sort_keys=False))
        (staging / EXPORT_FILE).write_text(json.dumps(
            {"version": EXPORT_VERSION, "dataset": str(dataset.root), "card_sha256": digest, "splits": counts,
             "extension": extension, "classes": dataset.classes}, indent=2) + "\n")
        if out.exists():
            shutil.rmtree(out)
        try:
            staging.rename(out)
        except OSError:  # another process finished the same export first: use theirs
            if not (out / EXPORT_FILE).exists():
                raise
            shutil.rmtree(staging, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return YoloExport(out)


def write_image_list(path: str | Path, files: Iterable[str | Path]) -> Path:
    """A ``.txt`` list of image paths (one per line, sorted): what ultralytics takes as a training
    set when each epoch trains on its own subset. Sorted, so the same subset always gives the same
    file (ultralytics' label cache is keyed by it); training order is ultralytics' own shuffle."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    partial.write_text("".join(f"{f}\n" for f in sorted(str(f) for f in files)))
    os.replace(partial, path)
    return path


def dominant_classes(boxes_per_image, num_classes: int) -> np.ndarray:
    """Each image's dominant class: the class with the most boxes, ties broken by the larger total box
    area, then the lower class index; -1 for an image without boxes (a background image).

    Detection subsets are balanced over this class, and DDS's furthest neighbour is searched within it."""
    out = np.full(len(boxes_per_image), -1, dtype=np.int64)
    for row, boxes in enumerate(boxes_per_image):
        if not boxes:
            continue
        counts = np.zeros(num_classes)
        areas = np.zeros(num_classes)
        for b in boxes:
            counts[int(b["cls"])] += 1
            areas[int(b["cls"])] += float(b["w"]) * float(b["h"])
        best = np.flatnonzero(counts == counts.max())
        out[row] = int(best[np.argmax(areas[best])])  # argmax keeps the lowest index among equal areas
    return out
