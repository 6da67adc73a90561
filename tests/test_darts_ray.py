"""DARTS with data selection on Ray Train (frugalnas.runtime.darts_trainer).

The slow tests start real Ray Train runs (TorchTrainer, CPU workers, gloo) on the built-in
digits with a tiny NAS-Bench-201 supernet; most of their time is Ray Train's start-up (~25 s per
run on a loaded 2-core machine), the search itself takes about a second per epoch.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from frugalnas.data import open_dataset
from frugalnas.data.torch_dataset import ImageSplit
from frugalnas.embed import load_latents, save_latents
from frugalnas.errors import ConfigError, DataError
from frugalnas.runtime.darts_trainer import parquet_loader, resolve_latents, run_darts_search
from frugalnas.spaces import load_space
from frugalnas.train.darts import DartsSettings, make_darts_search, split_loader

SPACE = {"family": "nb201", "supernet": {"channels": 4, "cells_per_stage": 1}}
# first order + global-batch BatchNorm: 1 and 2 workers then take the same steps (up to float
# summation order), so they can be compared tightly
SETTINGS = dict(epochs=4, batch_size=32, order=1, arch_lr=0.01, sync_batchnorm=True, seed=0)


@pytest.fixture(scope="module")
def setup(digits_dataset, tmp_path_factory):
    torch.set_num_threads(1)
    folder = tmp_path_factory.mktemp("darts_ray")
    train = ImageSplit(open_dataset(digits_dataset), "train")
    # raw pixels as latents: enough for dds to pick furthest neighbours, no autoencoder to train
    latents = save_latents(folder / "latents.parquet", train.ids, train.images.reshape(len(train.ids), -1).numpy())
    # the easiest half of the subset counts as easy: a 4-epoch supernet is rarely confident enough
    # for a fixed threshold, and an update that would swap nothing is no update
    selection = {"policy": "dds", "subset_size": 60, "warmup_epochs": 1, "mastery": 0.1, "easy_quantile": 0.5,
                 "latents": str(latents)}
    return {"dataset": digits_dataset, "store": folder / "runs", "selection": selection, "train": train,
            "latents": latents}


@pytest.fixture(scope="module")
def two_workers(setup, ray_session):
    """The uninterrupted 2-worker search the other tests compare with."""
    return run_darts_search(setup["dataset"], SPACE, SETTINGS, setup["selection"], 2, setup["store"], "two")


def alphas_of(result) -> np.ndarray:
    return np.concatenate([np.ravel(v) for _, v in sorted(result["alphas"].items())])


def without_seconds(history):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in history]


def test_bad_runs_fail_before_starting(setup):
    with pytest.raises(ConfigError, match="no checkpoint"):
        run_darts_search(setup["dataset"], SPACE, SETTINGS, setup["selection"], 2, setup["store"], "nothing",
                         resume=True)
    with pytest.raises(ConfigError, match="divisible by num_workers 3"):
        run_darts_search(setup["dataset"], SPACE, SETTINGS, setup["selection"], 3, setup["store"], "odd")
    with pytest.raises(ConfigError, match="mobilenet"):
        run_darts_search(setup["dataset"], "mobilenet", SETTINGS, setup["selection"], 1, setup["store"], "m")
    with pytest.raises(ConfigError, match="reader 'arrow' is unknown"):
        run_darts_search(setup["dataset"], SPACE, SETTINGS, setup["selection"], 1, setup["store"], "r", reader="arrow")


def test_parquet_reader_gives_the_in_memory_split_images(setup):
    ids = setup["train"].ids[np.random.default_rng(0).permutation(len(setup["train"].ids))[:40]]
    images, labels = parquet_loader(str(setup["dataset"]))(ids)
    expected_images, expected_labels = setup["train"].batch(ids)
    assert torch.equal(images, expected_images) and torch.equal(labels, expected_labels)


def test_dds_latents_come_from_a_file_or_a_trained_embedding(setup, tmp_path):
    import shutil

    selection, path = resolve_latents(setup["dataset"], setup["selection"])
    assert path == str(setup["latents"]) and "latents" not in selection
    assert resolve_latents(setup["dataset"], {"policy": "random", "latents": "/nowhere"}) == ({"policy": "random"}, None)
    with pytest.raises(DataError, match="does not exist"):
        resolve_latents(setup["dataset"], {"policy": "dds", "latents": str(tmp_path / "missing.parquet")})
    dataset = shutil.copytree(setup["dataset"], tmp_path / "digits")  # the embedding is saved beside the data
    embedding = {"kind": "plain", "latent_dim": 4, "epochs": 1, "image_size": 8}
    selection, path = resolve_latents(dataset, {"policy": "dds", "subset_size": 50, "embedding": embedding})
    assert selection == {"policy": "dds", "subset_size": 50}
    ids, vectors = load_latents(path)
    assert vectors.shape == (len(ids), 4)
    assert set(open_dataset(dataset).labels("train")[0]) <= set(ids)  # every training image has a latent


@pytest.mark.slow
def test_two_workers_derive_the_same_architecture_on_both_ranks(ray_session, setup):
    """DARTS's defaults (second order, per-worker BatchNorm) over real gloo all-reduces: the
    alphas of both ranks are bit-identical after every epoch."""
    settings = dict(epochs=2, batch_size=32, order=2, arch_lr=0.01, seed=1)
    result = run_darts_search(setup["dataset"], SPACE, settings, {"policy": "random", "subset_size": 64}, 2,
                              setup["store"], "ranks")
    digests = result["alphas_digest_by_rank"]
    assert len(digests) == 2 and digests[0] == digests[1] == result["alphas_digest"]
    assert result["last_metrics"]["alphas_digest_by_rank"] == digests  # reported with the last checkpoint
    assert all(r["alphas_digest"] for r in result["history"]) and result["epochs"] == 2
    space = load_space(SPACE)
    assert str(space.parse(result["genotype"])) == result["genotype"]
    assert result["images_processed"] == 2 * 64 == result["arch_images_processed"]
    assert result["last_metrics"]["epoch"] == 1 and result["last_metrics"]["done"] is True


@pytest.mark.slow
def test_one_and_two_workers_agree(ray_session, setup, two_workers):
    """Same seed and global batch: 1 worker (read through Ray Data) and 2 workers (read from
    Parquet) derive the same architecture; alphas differ by float summation order only
    (measured 4.5e-8 after 4 epochs, against 0.051 of alpha travel). The 1-worker Ray run is
    also bit-identical to the same search run in-process."""
    one = run_darts_search(setup["dataset"], SPACE, SETTINGS, setup["selection"], 1, setup["store"], "one",
                           reader="ray-data")
    two = two_workers
    assert one["genotype"] == two["genotype"]
    gap = np.abs(alphas_of(one) - alphas_of(two)).max()
    start = make_darts_search(load_space(SPACE), setup["train"].ids, setup["train"].labels, num_classes=10,
                              in_channels=1, settings=DartsSettings(**SETTINGS), selection={"policy": "full"})
    travel = np.abs(alphas_of(one) - alphas_of({"alphas": start.alphas()})).max()
    print(f"1 vs 2 Ray workers: alpha gap {gap:.2e}, alpha travel {travel:.3f}")
    assert gap < 1e-4 < 0.1 * travel
    assert [r["images_processed"] for r in one["history"]] == [r["images_processed"] for r in two["history"]]
    assert [r["subset_updates"] for r in one["history"]] == [r["subset_updates"] for r in two["history"]]
    assert one["subset_updates"] >= 1  # dds re-formed the subset along the way

    selection = {k: v for k, v in setup["selection"].items() if k != "latents"}
    local = make_darts_search(load_space(SPACE), setup["train"].ids, setup["train"].labels, num_classes=10,
                              in_channels=1, settings=DartsSettings(**SETTINGS), selection=selection,
                              latents=load_latents(setup["latents"]))
    local.run(split_loader(setup["train"]))
    assert local.alphas() == one["alphas"]
    assert without_seconds(local.history) == without_seconds(one["history"])


@pytest.mark.slow
def test_stopped_search_resumes_to_the_uninterrupted_result(ray_session, setup, two_workers):
    first = run_darts_search(setup["dataset"], SPACE, SETTINGS, setup["selection"], 2, setup["store"], "stopped",
                             stop_after_epoch=2)
    assert first["epochs"] == 2 and first["done"] is False
    with pytest.raises(ConfigError, match="resume=True"):
        run_darts_search(setup["dataset"], SPACE, SETTINGS, setup["selection"], 2, setup["store"], "stopped")
    resumed = run_darts_search(setup["dataset"], SPACE, SETTINGS, setup["selection"], 2, setup["store"], "stopped",
                               resume=True)
    assert resumed["done"] is True and resumed["epochs"] == 4
    assert resumed["alphas"] == two_workers["alphas"]  # bit for bit
    assert resumed["genotype"] == two_workers["genotype"]
    assert without_seconds(resumed["history"]) == without_seconds(two_workers["history"])
    assert resumed["images_processed"] == two_workers["images_processed"]
    assert resumed["arch_images_processed"] == two_workers["arch_images_processed"]
