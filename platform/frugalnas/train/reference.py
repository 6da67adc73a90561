"""The reference model of the ``entropy`` selector: trained once per dataset, it scores every
training image by the entropy of its prediction (Na et al. 2021 use a ResNet-20 trained on the full
training set). The scores are cached next to the dataset's embeddings, keyed by the settings, with a
report of what they cost (images processed, seconds) so that a comparison can count the one-off cost.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from frugalnas.cache import dataset_fingerprint, read_cached_report, settings_key, write_json_atomic
from frugalnas.data.torch_dataset import ImageSplit
from frugalnas.errors import DataError
from frugalnas.selection import make_selector
from frugalnas.selection.entropy import entropy_histogram, save_entropy_scores
from frugalnas.train.classify import EpochResult, TrainSettings, evaluate, train_with_selector
from frugalnas.train.models import build_arch

CACHE_DIR = "embeddings"  # beside the autoencoder latents
EVAL_SPLITS = ("test", "val")


@torch.no_grad()
def prediction_entropy(model: torch.nn.Module, data: ImageSplit, batch_size: int = 512) -> np.ndarray:
    """Entropy (nats) of the model's softmax prediction for every image of ``data``, in eval mode."""
    model.eval()
    out = []
    for start in range(0, len(data), batch_size):
        logp = F.log_softmax(model(data.images[start : start + batch_size]), dim=1)
        out.append((-(logp.exp() * logp).sum(1)).clamp_min(0).numpy())
    return np.concatenate(out).astype(np.float64)


def ensure_entropy_scores(dataset_dir: str | Path, *, arch: str = "baseline:cnn", epochs: int = 5,
                          batch_size: int = 64, lr: float = 0.05, seed: int = 0,
                          progress: Callable[[EpochResult], None] | None = None) -> dict:
    """The report of the reference model's entropy scores of every training image, training it only when
    no cached scores with exactly these settings exist for this dataset.

    The reference model (``arch``, a ``SPACE:ARCH`` string) trains on the whole train split for
    ``epochs`` epochs (SGD, cosine, ``batch_size``, ``lr``, ``seed``); then every training image gets
    the entropy of its eval-mode prediction. Writes ``DATASET/embeddings/entropy-<key>.parquet``
    (columns id, entropy) and ``.json``, the report: the settings, ``path``, ``dataset_fingerprint``,
    ``images_processed`` and ``train_seconds`` (the one-off training cost), ``seconds`` (training and
    scoring), ``reference_accuracy`` on the held-out split, the entropy histogram (bin width 0.5) and
    ``cached`` (True when this call reused an earlier result).
    """
    from frugalnas.data.store import open_dataset

    dataset = open_dataset(dataset_dir)
    if dataset.card["task"] != "classification":
        raise DataError(f"{dataset.root} is a {dataset.card['task']} dataset; entropy scores need classification")
    settings = {"arch": arch, "epochs": epochs, "batch_size": batch_size, "lr": lr, "seed": seed}
    fingerprint = dataset_fingerprint(dataset.card)
    report_path = dataset.root / CACHE_DIR / f"entropy-{settings_key(settings)}.json"
    cached = read_cached_report(report_path, fingerprint, settings)
    if cached is not None:
        return {**cached, "cached": True}

    started = time.perf_counter()
    train_data = ImageSplit(dataset, "train")
    with torch.random.fork_rng(devices=[]):  # seed the reference model without touching the caller's RNG
        torch.manual_seed(seed)
        model, arch_name = build_arch(arch, len(dataset.classes), dataset.channels)
        selector = make_selector("full", train_data.ids, train_data.labels, seed=seed)
        train_with_selector(model, train_data, selector,
                            TrainSettings(epochs=epochs, batch_size=batch_size, lr=lr, seed=seed), progress=progress)
    train_seconds = time.perf_counter() - started
    entropy = prediction_entropy(model, train_data)
    path = save_entropy_scores(report_path.with_suffix(".parquet"), train_data.ids, entropy)
    eval_split = next((s for s in EVAL_SPLITS if s in dataset.card["splits"]), None)
    histogram = entropy_histogram(entropy)
    report = {
        "kind": "entropy",
        **settings,
        "arch_name": arch_name,
        "path": str(path.resolve()),
        "dataset": str(dataset.root),
        "dataset_fingerprint": fingerprint,
        "num_images": int(len(train_data)),
        "images_processed": int(selector.images_processed),
        "train_seconds": round(train_seconds, 3),
        "seconds": round(time.perf_counter() - started, 3),
        "reference_accuracy": None if eval_split is None else {
            "split": eval_split, "accuracy": evaluate(model, ImageSplit(dataset, eval_split))},
        "train_accuracy": float(np.mean(_predictions(model, train_data) == train_data.labels)),
        "entropy": {"min": float(entropy.min()), "median": float(np.median(entropy)), "max": float(entropy.max()),
                    "log10_bin_edges": histogram["edges"].tolist(), "bin_counts": histogram["counts"].tolist()},
    }
    write_json_atomic(report_path, report)
    return {**report, "cached": False}


@torch.no_grad()
def _predictions(model: torch.nn.Module, data: ImageSplit, batch_size: int = 512) -> np.ndarray:
    model.eval()
    return np.concatenate([model(data.images[s : s + batch_size]).argmax(1).numpy()
                           for s in range(0, len(data), batch_size)])
