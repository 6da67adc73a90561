"""``frugalnas train``: one fixed architecture trained with a data selector, no search.

The baseline experiment of DDS-NAS: the same network trained on full data, a static random
subset, dynamically re-selected random subsets, or DDS subsets, compared by test accuracy against
the number of images processed.
"""
from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable

import torch

from frugalnas.data.store import open_dataset
from frugalnas.data.torch_dataset import ImageSplit
from frugalnas.embed.latents import ensure_embedding
from frugalnas.errors import ConfigError, DataError
from frugalnas.selection.factory import needs_entropy, needs_latents, selector_from_settings
from frugalnas.train.classify import EpochResult, TrainSettings, evaluate, train_with_selector
from frugalnas.train.models import build_arch


def train_fixed(dataset_dir: str | Path, arch: str, *, selector: str = "dds", subset_size: int | None = 100,
                hardness: float = 0.9, mastery: float = 0.6, warmup_epochs: int = 5, curriculum_stages: int = 0,
                order: str = "curriculum", easy_quantile: float | None = None, mastery_rule: str = "accuracy",
                index: str = "kdtree", embedding: dict | None = None, settings: TrainSettings | None = None,
                reference: dict | None = None, entropy_bin_width: float = 0.5,
                eval_split: str = "test", eval_every: int = 0,
                progress: Callable[[EpochResult], None] | None = None,
                embed_progress: Callable[[dict], None] | None = None,
                reference_progress: Callable[[EpochResult], None] | None = None) -> dict:
    """Train ``arch`` (``SPACE:ARCH``) on ``dataset_dir`` with the named selector; returns the report.

    ``embedding`` = {kind, latent_dim, epochs, image_size, seed} for dds (defaults: triplet, 16, 10, 32, 0;
    the autoencoder's own seed, so runs with any training seed share one embedding).
    ``reference`` = {arch, epochs, batch_size, lr, seed} of the entropy selector's reference model
    (defaults: baseline:cnn, 5, 64, 0.05, 0); ``entropy_bin_width`` its histogram's bin width.
    """
    settings = settings or TrainSettings()
    started = time.perf_counter()
    dataset = open_dataset(dataset_dir)
    if dataset.card["task"] != "classification":
        raise DataError(f"{dataset.root} is a {dataset.card['task']} dataset; `train` needs classification")
    if eval_split not in dataset.card["splits"]:
        raise DataError(f"dataset {dataset.root} has no {eval_split!r} split to measure accuracy on "
                        f"(it has {', '.join(dataset.split_names())})")
    torch.manual_seed(settings.seed)
    model, arch_name = build_arch(arch, len(dataset.classes), dataset.channels)
    train_data = ImageSplit(dataset, "train")
    test_data = ImageSplit(dataset, eval_split)

    latents, embedding_report = None, None
    if needs_latents(selector):
        from frugalnas.embed import load_latents

        embedding = {"kind": "triplet", "latent_dim": 16, "epochs": 10, "image_size": 32, **(embedding or {})}
        embedding_report = ensure_embedding(dataset_dir, progress=embed_progress, **embedding)
        latents = load_latents(embedding_report["path"])
    entropy_report = None
    if needs_entropy(selector):
        from frugalnas.train.reference import ensure_entropy_scores

        entropy_report = ensure_entropy_scores(dataset_dir, progress=reference_progress, **(reference or {}))
    try:
        chosen = selector_from_settings(
            selector, train_data.ids, train_data.labels, subset_size=subset_size, hardness=hardness, mastery=mastery,
            warmup_epochs=warmup_epochs, curriculum_stages=curriculum_stages, total_epochs=settings.epochs,
            order=order, easy_quantile=easy_quantile, mastery_rule=mastery_rule,
            seed=settings.seed, latents=latents, index=index,
            entropy_scores=entropy_report and entropy_report["path"], entropy_bin_width=entropy_bin_width)
    except ValueError as error:
        raise ConfigError(f"selector {selector!r}: {error}") from None
    history = train_with_selector(model, train_data, chosen, settings, eval_data=test_data, eval_every=eval_every,
                                  progress=progress)
    return {
        "arch": arch_name,
        "dataset": str(dataset.root),
        "selector": selector,
        "selector_params": chosen.params(),
        "test_accuracy": evaluate(model, test_data),
        "eval_split": eval_split,
        "images_processed": chosen.images_processed,
        "subset_updates": chosen.subset_updates,
        "epochs": settings.epochs,
        "images_budget": settings.images_budget,
        "schedule": settings.schedule,
        "trained_epochs": sum(r.trained for r in history),
        "params": sum(p.numel() for p in model.parameters()),
        "wall_seconds": round(time.perf_counter() - started, 3),
        "embedding": None if embedding_report is None else {
            k: embedding_report.get(k) for k in ("kind", "latent_dim", "epochs", "path", "knn_agreement",
                                                 "pixel_knn_agreement", "images_processed", "train_seconds", "warning")},
        "entropy_reference": None if entropy_report is None else {
            k: entropy_report[k] for k in ("arch", "epochs", "path", "images_processed", "train_seconds",
                                           "reference_accuracy", "cached")},
        "settings": asdict(settings),
        "history": [asdict(r) for r in history],
    }
