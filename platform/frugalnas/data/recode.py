"""Re-encode a stored dataset at another codec and quality, keeping every image's id, split, label,
boxes and source, so that datasets at different compression levels hold the same images.

The new codec encodes the pixels the original dataset decodes to, so a dataset stored losslessly
(png, raw) is the natural reference. The new card's PSNR, SSIM and bits per pixel are measured
against those decoded pixels, and ``recoded_from`` names the dataset they came from.
"""
from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Callable

from frugalnas import __version__
from frugalnas.data.codecs import make_codec
from frugalnas.data.ingest import codec_fields, encode_row, write_dataset
from frugalnas.data.schema import CARD_FILE
from frugalnas.data.store import open_dataset
from frugalnas.errors import DataError

#: card entries that describe the images themselves, so they carry over unchanged
KEPT_CARD_KEYS = ("name", "source", "task", "classes", "channels", "image_size", "image_sizes", "seed",
                  "pool_splits", "val_fraction", "test_fraction", "skipped")


def recode(dataset: str | Path, out: str | Path, *, codec: str, quality: int | None = None,
           splits: list[str] | tuple[str, ...] | None = None, overwrite: bool = False,
           progress: Callable[[int], None] | None = None) -> dict:
    """Write ``dataset`` re-encoded with ``codec`` at ``quality`` to ``out`` (only ``splits``, default
    all); returns the new card."""
    started = time.perf_counter()
    parent = open_dataset(dataset)
    encoder = make_codec(codec, quality)
    out = Path(out).expanduser().resolve()
    if out == parent.root:
        raise DataError(f"--out {out} is the dataset being recoded: write the recoded copy elsewhere")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise DataError(f"output folder {out} exists and is not empty: choose another --out or pass --overwrite")
    splits = list(splits or parent.split_names())
    unknown = [s for s in splits if s not in parent.card["splits"]]
    if unknown or not splits:
        raise DataError(f"dataset {parent.root} has no split(s) {unknown}: it has {', '.join(parent.split_names())}")

    by_split, done = {}, 0
    for split in [s for s in parent.split_names() if s in splits]:
        table = parent.table(split)
        rows = []
        columns = {name: table[name].to_pylist() for name in ("id", "image", "label", "boxes", "height", "width",
                                                              "source")}
        for i in range(table.num_rows):
            pixels = parent.codec.decode(columns["image"][i], columns["height"][i], columns["width"][i],
                                         parent.channels)
            boxes = columns["boxes"][i]
            rows.append(encode_row(encoder, pixels, id=columns["id"][i], split=split, label=columns["label"][i],
                                   boxes=None if boxes is None else [(b["cls"], b["cx"], b["cy"], b["w"], b["h"])
                                                                     for b in boxes],
                                   source=columns["source"][i]))
            done += 1
            if progress and done % 5000 == 0:
                progress(done)
        by_split[split] = rows

    card = {key: parent.card.get(key) for key in KEPT_CARD_KEYS}
    card.update({
        "splits": {s: len(r) for s, r in by_split.items()},
        "class_counts": {s: parent.card["class_counts"][s] for s in by_split},
        "background_images": (None if parent.card.get("background_images") is None else
                              {s: parent.card["background_images"][s] for s in by_split}),
        **codec_fields(encoder, parent.channels, by_split),
        "source_pixel_bytes": sum(r.source_bytes for rows in by_split.values() for r in rows),
        # PSNR, SSIM and bits per pixel above are against the pixels of this dataset:
        "recoded_from": {"path": str(parent.root), "codec": parent.card["codec"], "quality": parent.card["quality"],
                         "pixel_format": parent.card.get("pixel_format"), "mean_psnr": parent.card.get("mean_psnr"),
                         "card_sha256": card_digest(parent.root)},
        "recode_seconds": None,
        "frugalnas_version": __version__,
    })
    write_dataset(out, by_split, card, started, "recode_seconds")
    return card


def card_digest(dataset: str | Path) -> str:
    """A digest of a dataset's card: it changes whenever the dataset is written again."""
    return hashlib.sha256((Path(dataset) / CARD_FILE).read_bytes()).hexdigest()[:16]
