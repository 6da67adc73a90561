"""Ingest: read a source, validate every record, re-encode at a codec and quality, write Parquet
shards per split plus the dataset card (``dataset.json``).

Nothing is dropped silently: every bad record is listed in the card's ``skipped`` with its file (or
index) and reason, or with ``strict=True`` the first one raises.

The card also says what the codec cost, per split: stored and payload (headers excluded) bits per
pixel, and PSNR and SSIM of the stored images against the source pixels.
"""
from __future__ import annotations

import json
import shutil
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from frugalnas import __version__
from frugalnas.data.codecs import codec_versions, make_codec, psnr, ssim
from frugalnas.data.schema import CARD_FILE, ROWS_PER_FILE, SCHEMA, SPLIT_ORDER
from frugalnas.data.sources import Record, make_source
from frugalnas.errors import DataError

TASKS = ("classification", "detection")


@dataclass
class Row:
    """One stored image and what storing it cost."""

    id: int
    split: str
    image: bytes
    label: int
    boxes: list | None
    height: int
    width: int
    source: str
    psnr: float
    source_bytes: int
    payload_bytes: int = 0
    ssim: float | None = None  # measured on a sample of the images only (see SSIM_SAMPLE)


def _check_record(record: Record, num_classes: int, task: str) -> str | None:
    """Why the record cannot be stored, or None when it is fine."""
    if record.problem:
        return record.problem
    if record.label is None and task == "classification":
        return "no class label (a detection image without objects cannot be used for classification)"
    if record.label is not None and not 0 <= record.label < num_classes:
        return f"label out of range: {record.label}, allowed 0..{num_classes - 1}"
    for cls, cx, cy, w, h in record.boxes or []:
        if not 0 <= cls < num_classes:
            return f"box label out of range: {cls}, allowed 0..{num_classes - 1}"
        if w <= 0 or h <= 0 or cx - w / 2 < -1e-3 or cy - h / 2 < -1e-3 or cx + w / 2 > 1 + 1e-3 or cy + h / 2 > 1 + 1e-3:
            return f"box outside the image: {(cls, cx, cy, w, h)}"
    return None


def _load_pixels(record: Record, channels: int) -> np.ndarray:
    pixels = np.asarray(record.load())
    if pixels.dtype != np.uint8 or pixels.ndim != 3 or pixels.shape[2] != channels or min(pixels.shape[:2]) < 1:
        raise ValueError(f"expected an (H, W, {channels}) uint8 image, got {pixels.dtype} {pixels.shape}")
    return pixels


def _resize(pixels: np.ndarray, size: int | None) -> np.ndarray:
    if size is None or pixels.shape[:2] == (size, size):
        return pixels
    channels = pixels.shape[2]
    image = Image.fromarray(pixels[:, :, 0] if channels == 1 else pixels)
    resized = np.asarray(image.resize((size, size), Image.Resampling.BILINEAR))
    return resized[:, :, None] if channels == 1 else resized


def _carve(rows: list[Row], from_split: str, to_split: str, fraction: float, rng: np.random.Generator) -> None:
    """Move a class-stratified, seeded ``round(fraction * n)`` of ``from_split`` into ``to_split``.

    Each class gives its proportional share; the rounding remainder goes to the classes with the
    largest fractional shares, so tiny classes are neither emptied nor all carved away."""
    by_class = defaultdict(list)
    for row in rows:
        if row.split == from_split:
            by_class[row.label].append(row)
    labels = sorted(by_class)
    shares = np.array([fraction * len(by_class[label]) for label in labels])
    quota = np.floor(shares).astype(int)
    remainder = int(round(shares.sum())) - int(quota.sum())
    tie_break = rng.permutation(len(labels))
    for position in sorted(range(len(labels)), key=lambda i: (-(shares[i] - quota[i]), tie_break[i]))[:remainder]:
        quota[position] += 1
    for label, count in zip(labels, quota):
        members = by_class[label]
        for position in rng.permutation(len(members))[:count]:
            members[position].split = to_split


def _write_split(directory: Path, rows: list[Row]) -> None:
    directory.mkdir(parents=True)
    for part, start in enumerate(range(0, len(rows), ROWS_PER_FILE)):
        chunk = rows[start : start + ROWS_PER_FILE]
        table = pa.table({
            "id": [r.id for r in chunk],
            "image": [r.image for r in chunk],
            "label": [r.label for r in chunk],
            "boxes": [None if r.boxes is None else [dict(zip(("cls", "cx", "cy", "w", "h"), b)) for b in r.boxes]
                      for r in chunk],
            "height": [r.height for r in chunk],
            "width": [r.width for r in chunk],
            "source": [r.source for r in chunk],
        }, schema=SCHEMA)
        pq.write_table(table, directory / f"part-{part:05d}.parquet")


def ingest(
    spec: str,
    out: str | Path,
    *,
    codec: str = "jpeg",
    quality: int | None = None,
    image_size: int | None = None,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    seed: int = 0,
    task: str | None = None,
    classes: list[str] | None = None,
    strict: bool = False,
    overwrite: bool = False,
    pool_splits: bool = False,
    progress: Callable[[int], None] | None = None,
) -> dict:
    """Ingest ``spec`` (e.g. ``"digits"``, ``"cifar:/data/cifar-10-batches-py"``) into ``out``; returns the card.

    Splits the source lacks are carved from its train split, stratified by class and seeded:
    ``test`` with ``test_fraction`` and ``val`` with ``val_fraction``. ``classes`` fixes the class
    list (and order) of sources that take one (``voc``). With ``pool_splits`` the source's own splits
    are ignored: every record joins train before the carving (for a source that ships one split only,
    such as an MNIST test set).
    """
    started = time.perf_counter()
    out = Path(out).expanduser().resolve()
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise DataError(f"output folder {out} exists and is not empty: choose another --out or pass --overwrite")
    if image_size is not None and image_size < 1:
        raise DataError(f"image size must be a positive number of pixels, got {image_size}")
    for name, fraction in (("val fraction", val_fraction), ("test fraction", test_fraction)):
        if not 0 <= fraction < 1:
            raise DataError(f"{name} must be in [0, 1), got {fraction}")
    source = make_source(spec, seed=seed, classes=classes)
    encoder = make_codec(codec, quality)
    task = task or source.task
    if task not in TASKS:
        raise DataError(f"unknown task {task!r}: allowed {', '.join(TASKS)}")
    if task == "detection" and not source.has_boxes:
        raise DataError(f"source {source.name!r} has no bounding boxes, so it cannot be ingested for detection")

    rows: list[Row] = []
    skipped: list[dict] = []
    for image_id, record in enumerate(source.records()):
        reason = _check_record(record, len(source.classes), task)
        if reason is None:
            try:
                source_pixels = _resize(_load_pixels(record, source.channels), image_size)
            except Exception as error:  # any decoder failure is a corrupt image, reported not raised
                reason = f"unreadable image: {type(error).__name__}: {error}"
        if reason is not None:
            if strict:
                raise DataError(f"{record.source}: {reason} (--strict stops at the first bad record)")
            skipped.append({"source": record.source, "reason": reason})
            continue
        rows.append(encode_row(encoder, source_pixels, id=image_id, split="train" if pool_splits else record.split,
                               label=-1 if record.label is None else record.label,
                               boxes=record.boxes if source.has_boxes else None, source=record.source))
        if progress and len(rows) % 5000 == 0:
            progress(len(rows))
    if not rows:
        raise DataError(f"source {spec!r} gave no usable images ({len(skipped)} skipped)")

    rng = np.random.default_rng(seed)
    splits_present = {row.split for row in rows}
    if "test" not in splits_present and test_fraction > 0:
        _carve(rows, "train", "test", test_fraction, rng)
    if "val" not in splits_present and val_fraction > 0:
        _carve(rows, "train", "val", val_fraction, rng)

    by_split = defaultdict(list)
    for row in rows:
        by_split[row.split].append(row)
    split_names = [s for s in SPLIT_ORDER if s in by_split]
    sizes = sorted({(r.height, r.width) for r in rows})
    if image_size is None and len(sizes) == 1 and sizes[0][0] == sizes[0][1]:
        image_size = sizes[0][0]  # every image already has the same square size

    card = {
        "name": source.dataset_name,
        "source": spec,
        "task": task,
        "classes": source.classes,
        "channels": source.channels,
        "splits": {s: len(by_split[s]) for s in split_names},
        "class_counts": {s: _class_counts(by_split[s], source.classes, task) for s in split_names},
        # detection images without objects (kept and trained on as such, label -1); null for classification
        "background_images": ({s: sum(not r.boxes for r in by_split[s]) for s in split_names}
                              if task == "detection" else None),
        **codec_fields(encoder, source.channels, {s: by_split[s] for s in split_names}),
        "image_size": image_size,  # null when the images differ in size: re-ingest with --image-size
        "image_sizes": [list(s) for s in sizes[:20]],
        "source_pixel_bytes": sum(r.source_bytes for r in rows),
        "seed": seed,
        "pool_splits": pool_splits,
        "val_fraction": val_fraction if "val" not in splits_present else None,
        "test_fraction": test_fraction if "test" not in splits_present else None,
        "skipped": skipped,
        "ingest_seconds": None,
        "frugalnas_version": __version__,
    }
    write_dataset(out, {s: by_split[s] for s in split_names}, card, started, "ingest_seconds")
    return card


#: SSIM costs several times what encoding a small image does, so it is measured on a fixed sample:
#: the images whose id falls in one of SSIM_SAMPLE buckets (a multiplicative hash, the same images
#: at every level of a recoded dataset). PSNR is measured on every image.
SSIM_SAMPLE = 8


def in_ssim_sample(image_id: int) -> bool:
    return (image_id * 2654435761) % (1 << 32) % SSIM_SAMPLE == 0


def encode_row(encoder, pixels: np.ndarray, **fields) -> Row:
    """One image encoded, with what it cost: bytes, payload bytes, PSNR (and, for the sample, SSIM)
    against ``pixels``."""
    data = encoder.encode(pixels)
    stored = encoder.decode(data, *pixels.shape)
    return Row(image=data, height=pixels.shape[0], width=pixels.shape[1], psnr=psnr(pixels, stored),
               source_bytes=pixels.nbytes, payload_bytes=encoder.payload_bytes(data),
               ssim=ssim(pixels, stored) if in_ssim_sample(fields["id"]) else None, **fields)


def _mean_ssim(rows: list[Row]) -> float | None:
    sample = [r.ssim for r in rows if r.ssim is not None]
    return round(float(np.mean(sample)), 5) if sample else None


def codec_fields(encoder, channels: int, by_split: dict[str, list[Row]]) -> dict:
    """The card's codec entries: codec, quality, pixel format, library versions, and per split the
    stored and payload bits per pixel, PSNR and SSIM (against the pixels that were encoded)."""
    rows = [row for split_rows in by_split.values() for row in split_rows]
    return {
        "codec": encoder.name,
        "quality": encoder.quality,
        "quality_scale": encoder.scale if encoder.lossy else None,
        "pixel_format": encoder.pixel_format(channels),
        "codec_versions": codec_versions(encoder.name),
        "stored_bytes": sum(len(r.image) for r in rows),
        "payload_bytes": sum(r.payload_bytes for r in rows),
        "bytes_per_image": round(sum(len(r.image) for r in rows) / len(rows), 2),
        "mean_psnr": round(float(np.mean([r.psnr for r in rows])), 3),
        "mean_ssim": _mean_ssim(rows),
        "ssim_images": sum(r.ssim is not None for r in rows),
        "split_stats": {split: _split_stats(split_rows) for split, split_rows in by_split.items()},
    }


def _split_stats(rows: list[Row]) -> dict:
    pixels = sum(r.height * r.width for r in rows)
    stored, payload = sum(len(r.image) for r in rows), sum(r.payload_bytes for r in rows)
    return {"images": len(rows), "pixels": pixels, "stored_bytes": stored, "payload_bytes": payload,
            "stored_bpp": round(8 * stored / pixels, 4), "payload_bpp": round(8 * payload / pixels, 4),
            "mean_psnr": round(float(np.mean([r.psnr for r in rows])), 3),
            "mean_ssim": _mean_ssim(rows), "ssim_images": sum(r.ssim is not None for r in rows)}


def write_dataset(out: Path, by_split: dict[str, list[Row]], card: dict, started: float, seconds_key: str) -> None:
    """Write the splits and the card to a staging folder beside ``out``, then rename it into place, so
    an interrupted write leaves no half dataset."""
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        for split in [s for s in SPLIT_ORDER if s in by_split]:
            _write_split(staging / split, by_split[split])
        card[seconds_key] = round(time.perf_counter() - started, 3)
        (staging / CARD_FILE).write_text(json.dumps(card, indent=2) + "\n")
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _class_counts(rows: list[Row], classes: list[str], task: str) -> dict[str, int]:
    """Images per class (classification) or objects per class (detection)."""
    counts = Counter()
    for row in rows:
        if task == "detection":
            counts.update(b[0] for b in row.boxes or [])
        else:
            counts[row.label] += 1
    return {name: counts.get(i, 0) for i, name in enumerate(classes)}
