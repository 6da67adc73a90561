"""DARTS with data selection on Ray Train: one data-parallel supernet search over N workers.

The search itself is :class:`frugalnas.train.darts.DartsSearch` (plain PyTorch); this module only
runs one replica of it per Ray Train worker (``TorchTrainer``; gloo on CPU, NCCL on GPU) with
``torch.distributed.all_reduce`` as its all-reduce hook, feeds it images, and checkpoints it.

* Replicas: every worker builds the same search (same seed, same bi-level split, same selector);
  gradients, per-image hardness and step metrics are summed over workers, so alphas, weights and
  plans stay identical (checked bit for bit after every epoch; the per-rank alpha digests are
  reported too). Nothing is broadcast.
* Data: each epoch every worker computes the plan's global batches and takes its class-balanced,
  curriculum-ordered share of each (:func:`frugalnas.train.darts.worker_batches`, built on
  ``curriculum_shards``), then reads only those images. ``reader="parquet"`` (default) decodes
  them straight from the Parquet store; ``reader="ray-data"`` goes through
  :func:`frugalnas.runtime.data.subset_shards`. Both give the search bit-identical images. Ray
  Data works inside the workers, but it is not the default: the plan changes every epoch, so every
  read is a new pipeline started inside a worker (measured ~3 s extra on the first epoch of a
  digits run), its decode tasks need CPUs beyond the workers' reservation (a cluster whose CPUs
  are all reserved by training workers would wait forever), and a trainer's static ``datasets=``
  cannot express per-epoch subsets.
* Checkpoints: rank 0 reports ``ray.train.report(metrics, checkpoint)`` after every epoch with
  the search's whole state; the other ranks report metrics only (the state is identical). A run
  started again with the same ``name`` and ``storage_path`` and ``resume=True`` continues from the
  latest checkpoint (Ray Train V2 restores it from the run folder: ``ray.train.get_checkpoint()``;
  ``TorchTrainer.restore`` and ``resume_from_checkpoint`` are gone in V2).
"""
from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from frugalnas.data.store import open_dataset
from frugalnas.errors import ConfigError, DataError
from frugalnas.selection.factory import needs_latents
from frugalnas.spaces.base import CellSpace, Space
from frugalnas.spaces.loader import load_space, space_from_dict
from frugalnas.train.darts import (
    DartsSearch,
    DartsSettings,
    alphas_digest,
    make_darts_search,
    summarize,
    torch_all_reduce,
)

STATE_FILE = "search.pt"
SUMMARY_FILE = "summary.json"
SNAPSHOT_FILE = "checkpoint_manager_snapshot.json"  # Ray Train V2 writes it once a run has a checkpoint
READERS = ("parquet", "ray-data")


# ---------------------------------------------------------------- reading a worker's images


def parquet_loader(dataset_dir: str, split: str = "train"):
    """``load(ids)`` decoding the images straight from the Parquet store (no Ray Data)."""
    dataset = open_dataset(dataset_dir)

    def load(ids: np.ndarray):
        _, images, labels = dataset.arrays(split, ids=ids)
        images = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2))).float().div_(255.0)
        return images, torch.from_numpy(labels)
    return load


def ray_data_loader(dataset_dir: str, split: str = "train"):
    """``load(ids)`` through a Ray Data pipeline (read, decode in ``map_batches``); rows are put
    back in the order of ``ids`` by id, whatever order Ray Data yields them in."""
    from frugalnas.runtime.data import preserve_order, subset_shards

    preserve_order()

    def load(ids: np.ndarray):
        ids = np.asarray(ids, dtype=np.int64)
        if not len(ids):
            return torch.zeros(0), torch.zeros(0, dtype=torch.long)
        got_ids, images, labels = [], [], []
        for batch in subset_shards(dataset_dir, split, ids, 1)[0].iter_batches(batch_size=None, batch_format="numpy"):
            got_ids.append(batch["id"])
            images.append(batch["image"])
            labels.append(batch["label"])
        got_ids = np.concatenate(got_ids)
        position = {int(i): p for p, i in enumerate(got_ids)}
        rows = np.array([position[int(i)] for i in ids])
        return torch.from_numpy(np.concatenate(images)[rows]), torch.from_numpy(np.concatenate(labels)[rows])
    return load


LOADERS = {"parquet": parquet_loader, "ray-data": ray_data_loader}


# ---------------------------------------------------------------- the per-worker loop


def _scalar_metrics(record: dict) -> dict:
    return {k: v for k, v in record.items() if isinstance(v, (int, float, str, bool)) or v is None}


def _gather_digests(search: DartsSearch) -> list[str]:
    digest = alphas_digest(search.supernet)
    if search.world_size == 1:
        return [digest]
    digests = [None] * search.world_size
    torch.distributed.all_gather_object(digests, digest)
    return digests


def _summary(search: DartsSearch, digests: list[str]) -> dict:
    out = summarize(search)
    out.update(done=search.done, workers=search.world_size, alphas_digest_by_rank=digests,
               search_seconds=sum(r["seconds"] for r in search.history))
    return out


def darts_worker_loop(config: dict) -> dict:
    """The function every Ray Train worker runs (``train_loop_per_worker``)."""
    import ray.train
    import ray.train.torch

    torch.set_num_threads(config["threads"])
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    device = ray.train.torch.get_device() if config["use_gpu"] else torch.device("cpu")
    dataset = open_dataset(config["dataset_dir"])
    ids, labels = dataset.labels("train")
    latents = None
    if config["latents"]:
        from frugalnas.embed import load_latents

        latents = load_latents(config["latents"])
    search = make_darts_search(
        space_from_dict(config["space"]), ids, labels, num_classes=len(dataset.classes),
        in_channels=dataset.channels, settings=DartsSettings.from_dict(config["settings"]),
        selection=config["selection"], latents=latents, rank=rank, world_size=world,
        all_reduce=torch_all_reduce if world > 1 else None, device=device)

    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            search.load_state_dict(torch.load(Path(folder) / STATE_FILE, map_location=device, weights_only=False))

    load = LOADERS[config["reader"]](config["dataset_dir"])
    stop = config["stop_after_epoch"]
    digests = _gather_digests(search)
    while not search.done and (stop is None or search.epoch < stop):
        record = search.run_epoch(load)
        digests = _gather_digests(search)
        metrics = {**_scalar_metrics(record), "done": search.done, "alphas_digest_by_rank": digests}
        if rank == 0:
            with tempfile.TemporaryDirectory() as folder:
                torch.save(search.state_dict(), Path(folder) / STATE_FILE)
                (Path(folder) / SUMMARY_FILE).write_text(json.dumps(_summary(search, digests)))
                ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(folder))
        else:
            ray.train.report(metrics, checkpoint=None)
    return _summary(search, digests)


# ---------------------------------------------------------------- the driver


def _space_settings(space: CellSpace | str | Path | Mapping[str, Any]) -> dict:
    if not isinstance(space, Space):
        space = load_space(space)
    if not isinstance(space, CellSpace):
        raise ConfigError(f"DARTS needs a cell space with a supernet (nb201, darts), got the {space.family!r} space")
    return space.config.model_dump(mode="json")


def resolve_latents(dataset_dir: str | Path, selection: Mapping[str, Any]) -> tuple[dict, str | None]:
    """(selector settings, latents file) for ``selection``.

    dds needs latents: ``selection['latents']`` names a file, or ``selection['embedding']``
    describes the autoencoder (trained once, here on the driver, unless a saved embedding with
    those settings exists next to the dataset). Other policies need none (None)."""
    selection = dict(selection)
    latents, embedding = selection.pop("latents", None), selection.pop("embedding", None)
    if not needs_latents(selection.get("policy", "dds")):
        return selection, None
    if latents is not None:
        path = Path(latents).expanduser().resolve()
        if not path.exists():
            raise DataError(f"selection.latents: file {path} does not exist")
        return selection, str(path)
    from frugalnas.embed.latents import ensure_embedding

    # the autoencoder's own seed (embedding.seed, default 0), not the search's: one embedding per dataset
    embedding = {"kind": "triplet", "latent_dim": 16, "epochs": 10, "image_size": 32, **(embedding or {})}
    return selection, str(Path(ensure_embedding(dataset_dir, **embedding)["path"]).resolve())


def run_darts_search(dataset_dir: str | Path, space: CellSpace | str | Path | Mapping[str, Any],
                     settings: DartsSettings | Mapping[str, Any], selection: Mapping[str, Any],
                     num_workers: int = 1, storage_path: str | Path = "runs/ray", name: str = "darts",
                     resume: bool = False, *, stop_after_epoch: int | None = None, reader: str = "parquet",
                     cpus_per_worker: float = 0.5, use_gpu: bool | None = None, max_failures: int = 0) -> dict:
    """Run (or, with ``resume``, continue) a DARTS search with data selection on Ray Train.

    ``selection`` holds the experiment's ``selection:`` keys (policy, subset_size, hardness,
    mastery, warmup_epochs, curriculum_stages, index) and, for dds, ``latents`` (a latents file)
    or ``embedding`` (settings of the autoencoder to train or reuse). ``stop_after_epoch`` ends
    this run after that many epochs in all (a planned stop; ``resume=True`` continues it).
    ``max_failures``: how often Ray Train restarts the worker group from the latest checkpoint after
    a worker fails (a lost node, a killed process); -1: no limit.

    Returns the derived architecture (canonical string), the alphas, the per-epoch history,
    images processed (weight steps, the selector's count) and arch images processed, subset
    updates, per-rank alpha digests, wall seconds of this call, and where the checkpoint is.
    """
    started = time.perf_counter()
    import ray
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    settings = settings if isinstance(settings, DartsSettings) else DartsSettings.from_dict(settings)
    dataset = open_dataset(dataset_dir)
    if dataset.card["task"] != "classification":
        raise DataError(f"{dataset.root} is a {dataset.card['task']} dataset; DARTS search needs classification")
    if not isinstance(num_workers, int) or num_workers < 1:
        raise ConfigError(f"num_workers must be an integer >= 1, got {num_workers!r}")
    if settings.batch_size % num_workers:
        raise ConfigError(f"batch_size {settings.batch_size} (the global batch) must be divisible by "
                          f"num_workers {num_workers}")
    if reader not in READERS:
        raise ConfigError(f"reader {reader!r} is unknown; allowed: {', '.join(READERS)}")
    if stop_after_epoch is not None and (not isinstance(stop_after_epoch, int) or stop_after_epoch < 1):
        raise ConfigError(f"stop_after_epoch must be an integer >= 1 or None, got {stop_after_epoch!r}")
    storage = Path(storage_path).expanduser().resolve()
    has_checkpoint = (storage / name / SNAPSHOT_FILE).exists()
    if resume and not has_checkpoint:
        raise ConfigError(f"resume=True but run {name!r} has no checkpoint in {storage}; start it with resume=False")
    if not resume and (storage / name).exists():
        hint = "pass resume=True to continue it" if has_checkpoint else f"delete {storage / name}"
        raise ConfigError(f"run {name!r} already exists in {storage}: {hint}, or choose another name")
    selection, latents = resolve_latents(dataset.root, selection)
    use_gpu = torch.cuda.is_available() if use_gpu is None else use_gpu
    config = {
        "dataset_dir": str(dataset.root),
        "space": _space_settings(space),
        "settings": settings.to_dict(),
        "selection": selection,
        "latents": latents,
        "reader": reader,
        "stop_after_epoch": stop_after_epoch,
        "threads": max(1, int(cpus_per_worker)),
        "use_gpu": use_gpu,
    }
    if not ray.is_initialized():
        ray.init()
    trainer = TorchTrainer(
        darts_worker_loop,
        train_loop_config=config,
        scaling_config=ScalingConfig(num_workers=num_workers, use_gpu=use_gpu,
                                     resources_per_worker={"CPU": cpus_per_worker}),
        run_config=RunConfig(name=name, storage_path=str(storage), checkpoint_config=CheckpointConfig(num_to_keep=2),
                             failure_config=FailureConfig(max_failures=max_failures)),
    )
    result = trainer.fit()
    if result.error is not None:
        raise result.error
    summary = result.return_value
    if summary is None:  # rank 0 returned nothing (should not happen): fall back to the checkpoint
        with result.checkpoint.as_directory() as folder:
            summary = json.loads((Path(folder) / SUMMARY_FILE).read_text())
    summary = dict(summary)
    summary.update(
        wall_seconds=time.perf_counter() - started,
        run_path=str(storage / name),
        checkpoint=None if result.checkpoint is None else result.checkpoint.path,
        last_metrics=dict(result.metrics or {}),
        reader=reader,
    )
    return summary
