"""Latent vectors on disk, and embedding a whole stored dataset in one call.

Latents are a Parquet file beside the dataset (``DATASET/embeddings/<kind>-d<latent_dim>-<key>.parquet``,
columns ``id`` int64 and ``latent`` fixed-size list<float32>), so the selection step (and Ray
Data) reads them by image id without the autoencoder. ``<key>`` hashes every embedding setting
(and the autoencoder kind's recipe version), so embeddings made with other settings never
overwrite each other; the training seed of whoever uses them is no part of it. A JSON report
beside it records how the latents were made (with the dataset's fingerprint, checked on reuse),
what they cost, and how well they put same-class images together (for detection data also how
well they put images with the same objects together, and how different the furthest one is), with
a ``warning`` when their neighbours agree on labels less often than raw pixels' do.
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Callable

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from frugalnas.cache import dataset_fingerprint, read_cached_report, settings_key, write_json_atomic
from frugalnas.embed.autoencoder import AUTOENCODERS
from frugalnas.embed.quality import (
    furthest_label_jaccard, knn_agreement, knn_label_jaccard, label_set_matrix, pixel_vectors, random_label_jaccard)
from frugalnas.embed.training import encode, train_autoencoder
from frugalnas.errors import DataError

EMBEDDINGS_DIR = "embeddings"
AGREEMENT_KS = (5, 10)
EVAL_SPLIT_ORDER = ("test", "val", "train")  # the first present is the evaluation split
MAX_SIZE = {"classification": 64, "detection": 256}  # default autoencoder input: objects need pixels


def default_image_size(card: dict) -> int:
    """The autoencoder input for a dataset card: the next power of two >= the stored size, between
    8 and 64 (32 when the sizes differ); for detection data up to 256 (the DDS-NAS thesis embeds
    detection images at 256; objects need pixels), from the largest side when the sizes differ."""
    stored = card.get("image_size")
    if not stored:
        sides = [max(s) for s in card.get("image_sizes") or []]
        stored = max(sides) if sides and card.get("task") == "detection" else 32
    size = 8
    while size < min(MAX_SIZE.get(card.get("task"), 64), stored):
        size *= 2
    return size


def save_latents(path: str | Path, ids: np.ndarray, latents: np.ndarray) -> Path:
    """Write ``ids`` (N,) and ``latents`` (N, D) to a Parquet file at ``path``; returns the path.

    Written to a temporary file first and renamed, so a reader never sees half a file.
    """
    ids = np.asarray(ids)
    latents = np.asarray(latents, dtype=np.float32)
    if latents.ndim != 2 or ids.shape != (len(latents),):
        raise ValueError(f"ids {ids.shape} and latents {latents.shape} must be (N,) and (N, D)")
    if not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"ids must be integers, got dtype {ids.dtype}")
    if len(np.unique(ids)) != len(ids):
        raise ValueError("ids must be unique (one latent per image)")
    if latents.shape[1] < 1:
        raise ValueError("latents must have at least one dimension")
    column = pa.FixedSizeListArray.from_arrays(pa.array(latents.reshape(-1)), latents.shape[1])
    table = pa.table({"id": pa.array(ids.astype(np.int64)), "latent": column})
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, path)
    return path


def load_latents(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Read a file written by :func:`save_latents`: (ids int64 (N,), latents float32 (N, D))."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"latents file {path} does not exist: create it with embed_dataset")
    try:
        table = pq.read_table(path)
    except pa.ArrowInvalid as error:
        raise DataError(f"latents file {path} is not a readable Parquet file: {error}") from None
    latent_type = table.schema.field("latent").type if "latent" in table.column_names else None
    if "id" not in table.column_names or not pa.types.is_fixed_size_list(latent_type):
        raise DataError(f"latents file {path} needs columns id (int64) and latent "
                        f"(fixed-size list<float32>); it has {table.schema}")
    column = table["latent"].combine_chunks()
    if column.null_count:
        raise DataError(f"latents file {path} has {column.null_count} missing latent(s)")
    dim = latent_type.list_size
    latents = column.flatten().to_numpy(zero_copy_only=False).astype(np.float32).reshape(-1, dim)
    return table["id"].to_numpy().astype(np.int64), latents


def embedding_settings(kind: str, latent_dim: int, epochs: int, image_size: int, seed: int, batch_size: int,
                       lr: float, margin: float, attention_weight: float) -> dict:
    """Everything that decides an embedding, as stored in its report and hashed into its file name
    (``recipe``: the autoencoder kind's recipe version, bumped when its training changes;
    ``attention_weight`` only for kinds trained on box masks)."""
    model_class = AUTOENCODERS.get(kind)
    return {"kind": kind, "latent_dim": latent_dim, "epochs": epochs, "image_size": image_size, "seed": seed,
            "batch_size": batch_size, "lr": lr, "margin": margin,
            **({"attention_weight": attention_weight} if model_class.uses_masks else {}),
            "recipe": model_class.recipe}


def embedding_name(settings: dict) -> str:
    """File stem of an embedding: ``triplet-d16-<key>``, the key a hash of all its settings;
    ``-untrained`` marks the epochs=0 control."""
    untrained = "-untrained" if settings["epochs"] == 0 else ""
    return f"{settings['kind']}-d{settings['latent_dim']}{untrained}-{settings_key(settings)}"


def quality_warning(knn: dict, pixels: dict) -> str | None:
    """A warning when the latents' nearest neighbours share labels less often than raw pixels' do:
    furthest-neighbour replacement in such a space picks by something other than image content."""
    worse = [k for k in knn if knn[k] is not None and pixels.get(k) is not None and knn[k] < pixels[k]]
    if not worse:
        return None
    shown = ", ".join(f"knn@{k} {knn[k]:.3f} < pixels {pixels[k]:.3f}" for k in worse)
    return (f"the latent space groups same-class images worse than raw pixels ({shown}): its nearest "
            "and furthest neighbours are less meaningful than pixel distances; train longer, or try another "
            "autoencoder kind or latent size")


def embed_dataset(
    dataset_dir: str | Path,
    *,
    kind: str = "triplet",
    latent_dim: int = 16,
    epochs: int = 10,
    image_size: int = 32,
    seed: int = 0,
    batch_size: int = 128,
    lr: float = 1e-3,
    margin: float = 0.2,
    attention_weight: float = 1.0,
    progress: Callable[[dict], None] | None = None,
) -> dict:
    """Train an autoencoder on a stored dataset's train split, embed every split, save, report.

    Writes ``DATASET/embeddings/<kind>-d<latent_dim>[-untrained]-<key>.parquet`` (the latents of every
    image of every split) and ``.json`` (the report), and returns the report: the settings, the parquet
    path, ``eval_split`` (test, else val, else train), ``knn_agreement`` and
    ``pixel_knn_agreement`` ({"5": x, "10": y}: label agreement among nearest neighbours of the
    eval split's latents, and of its raw pixels at ``image_size``, the baseline to beat),
    ``held_out`` (whether the eval split was unseen in training), ``final_loss`` (None when
    ``epochs=0``), ``images_processed`` and ``train_seconds`` (the autoencoder's training cost),
    ``seconds`` (the whole call), ``latent_std`` (mean over dimensions of the eval latents' standard
    deviation: near 0 means the space collapsed to a point), ``warning`` (None, or why the latents
    group same-class images worse than raw pixels) and ``dataset_fingerprint``.

    For a detection data set (each image has a *set* of labels, the classes of its boxes) the
    report adds, on the eval split: ``label_jaccard`` ({"5": x, "10": y}: mean Jaccard of label
    sets between each image and its k nearest latent neighbours), ``pixel_label_jaccard`` (the same
    on raw pixels), ``random_label_jaccard`` (over all pairs: a random neighbour),
    ``furthest_label_jaccard`` (with each image's furthest latent neighbour), its raw-pixel
    counterpart ``pixel_furthest_label_jaccard``, and ``furthest_same_class_label_jaccard`` (the
    furthest neighbour among images of the same dominant class: the image DDS swaps in). The
    ``attention`` kind (detection only) adds ``attention_iou``: IoU of its gate (> 0.5) with the box
    masks (> 0.5) on the eval split.
    """
    from frugalnas.data import open_dataset  # the data layer is heavier; load it only when used

    started = time.perf_counter()
    model_class = AUTOENCODERS.get(kind)  # an unknown kind fails before any image is decoded
    ds = open_dataset(dataset_dir)
    detection = ds.card.get("task") == "detection"
    if model_class.uses_masks and not detection:
        raise DataError(f"the {kind} autoencoder is trained on box masks and needs a detection data set; {ds.root} "
                        f"is a {ds.card.get('task')} data set: ingest a source with boxes (yolo:, voc:, shapes) "
                        "with --task detection, or use --kind plain or triplet")
    splits = ds.split_names()
    if "train" not in splits:
        raise DataError(f"dataset {ds.root} has no train split to train the autoencoder on "
                        f"(it has {', '.join(splits) or 'none'})")
    # mixed-size datasets (card image_size null) can only be decoded at a given size
    decode_kw = {} if ds.card.get("image_size") else {"image_size": image_size}
    arrays = {split: ds.arrays(split, **decode_kw) for split in splits}
    # the boxes column in the same row order as arrays(); only detection data sets use it
    boxes = {split: ds.table(split, ["boxes"])["boxes"].to_pylist() for split in splits} if detection else {}

    _, train_images, train_labels = arrays["train"]
    train_started = time.perf_counter()
    model, history = train_autoencoder(
        train_images, train_labels, kind=kind, latent_dim=latent_dim, epochs=epochs,
        image_size=image_size, batch_size=batch_size, lr=lr, margin=margin,
        attention_weight=attention_weight, boxes=boxes.get("train"), seed=seed, progress=progress)
    train_seconds = time.perf_counter() - train_started

    ids = np.concatenate([arrays[s][0] for s in splits])
    latents = np.concatenate([encode(model, arrays[s][1], image_size) for s in splits])
    settings = embedding_settings(kind, latent_dim, epochs, image_size, seed, batch_size, lr, margin, attention_weight)
    path = save_latents(ds.root / EMBEDDINGS_DIR / f"{embedding_name(settings)}.parquet", ids, latents)

    eval_split = next(s for s in EVAL_SPLIT_ORDER if s in splits)
    _, eval_images, eval_labels = arrays[eval_split]
    offset = sum(len(arrays[s][0]) for s in splits[:splits.index(eval_split)])
    eval_latents = latents[offset:offset + len(eval_labels)]
    eval_pixels = pixel_vectors(eval_images, image_size)
    knn, pixels = _agreements(eval_latents, eval_labels), _agreements(eval_pixels, eval_labels)
    report = {
        **settings,
        "path": str(path.resolve()),
        "dataset_fingerprint": dataset_fingerprint(ds.card),
        "num_images": {s: int(len(arrays[s][0])) for s in splits},
        "eval_split": eval_split,
        "held_out": eval_split != "train",
        "knn_agreement": knn,
        "pixel_knn_agreement": pixels,
        "latent_std": float(eval_latents.std(axis=0).mean()),
        "warning": quality_warning(knn, pixels),
        **(_label_set_report(eval_latents, eval_pixels, eval_labels, boxes[eval_split], len(ds.classes))
           if detection else {}),
        **({"attention_iou": attention_iou(model, eval_images, boxes[eval_split])} if model_class.uses_masks else {}),
        "final_loss": history[-1]["loss"] if history else None,
        "history": history,
        # the one-off cost of the embedding, for comparisons that count it: training images
        # (forward + backward) and seconds of the autoencoder's training, then of the whole call
        "images_processed": int(epochs * len(train_labels)),
        "train_seconds": round(train_seconds, 3),
        "seconds": round(time.perf_counter() - started, 3),
    }
    write_json_atomic(path.with_suffix(".json"), report)
    return report


def _agreements(vectors: np.ndarray, labels: np.ndarray) -> dict[str, float | None]:
    """knn_agreement at each k in AGREEMENT_KS; None where the split has too few images."""
    return {str(k): knn_agreement(vectors, labels, k) if k < len(labels) else None
            for k in AGREEMENT_KS}


def _label_set_report(latents: np.ndarray, pixels: np.ndarray, labels: np.ndarray, boxes: list,
                      num_classes: int) -> dict:
    """The label-set (Jaccard) measures of a detection eval split; see :func:`embed_dataset`."""
    sets = label_set_matrix(boxes, num_classes)
    ks = [k for k in AGREEMENT_KS]
    return {
        "label_jaccard": {str(k): knn_label_jaccard(latents, sets, k) if k < len(sets) else None for k in ks},
        "pixel_label_jaccard": {str(k): knn_label_jaccard(pixels, sets, k) if k < len(sets) else None for k in ks},
        "random_label_jaccard": random_label_jaccard(sets),
        "furthest_label_jaccard": furthest_label_jaccard(latents, sets),
        "pixel_furthest_label_jaccard": furthest_label_jaccard(pixels, sets),
        "furthest_same_class_label_jaccard": furthest_label_jaccard(latents, sets, groups=labels),
    }


def attention_iou(model, images: np.ndarray, boxes: list) -> float:
    """IoU, pooled over the images, of the attention gate (> 0.5) with the box masks (> 0.5)."""
    import torch

    from frugalnas.embed.attention import box_masks
    from frugalnas.embed.training import prepare_images, to_unit

    masks = torch.from_numpy(box_masks(boxes, model.gate_grid)) > 0.5
    with torch.no_grad():
        x = prepare_images(images, model.image_size)
        gate = torch.cat([model.attention(to_unit(b))[1] for b in x.split(256)]) > 0.5
    union = (gate | masks).sum().item()
    return float((gate & masks).sum().item() / union) if union else 1.0


def ensure_embedding(dataset_dir: str | Path, *, kind: str, latent_dim: int, epochs: int, image_size: int,
                     seed: int = 0, batch_size: int = 128, lr: float = 1e-3, margin: float = 0.2,
                     attention_weight: float = 1.0, progress: Callable[[dict], None] | None = None) -> dict:
    """The embedding report for these settings, training the autoencoder only when no saved
    embedding of this dataset (same fingerprint) with exactly these settings exists next to it.

    ``seed`` is the autoencoder's own seed, not the seed of the search or training that uses the
    embedding: every run on one dataset shares one embedding per setting. The report says
    ``cached`` (True when it was reused)."""
    from frugalnas.data import open_dataset

    dataset = open_dataset(dataset_dir)
    settings = embedding_settings(kind, latent_dim, epochs, image_size, seed, batch_size, lr, margin, attention_weight)
    report_path = dataset.root / EMBEDDINGS_DIR / f"{embedding_name(settings)}.json"
    cached = read_cached_report(report_path, dataset_fingerprint(dataset.card), settings)
    if cached is not None:
        return {**cached, "cached": True}
    report = embed_dataset(dataset_dir, kind=kind, latent_dim=latent_dim, epochs=epochs, image_size=image_size,
                           seed=seed, batch_size=batch_size, lr=lr, margin=margin, attention_weight=attention_weight,
                           progress=progress)
    return {**report, "cached": False}
