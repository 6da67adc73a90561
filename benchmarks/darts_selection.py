"""DARTS (first order) with data selection: search cost and final accuracy of full / random / dynamic-random / dds.

    nice -n 10 .venv/bin/python benchmarks/darts_selection.py            # digits + CIFAR-10 sample + Ray Train, ~35 min
    nice -n 10 .venv/bin/python benchmarks/darts_selection.py --quick    # smoke test, a few minutes

The published DDS-NAS claim: gradient-based NAS searched up to 27x cheaper at equal final
accuracy. For each dataset and seed this runs the same DARTS search (first order, NAS-Bench-201
cell supernet, bi-level halves of the training split) with each selector, derives the cell, retrains
it from scratch with the same settings for every selector and reports: search images processed
(weight steps + arch steps), search wall time, and the retrained test accuracy. Ratios full/dds are
paired by seed.

Which code path each number uses:

* selector comparison: the in-process search, ``frugalnas.train.darts.make_darts_search`` +
  ``DartsSearch.run`` over an in-memory ``ImageSplit`` (what every Ray Train worker runs, minus Ray);
  retraining: ``frugalnas.runtime.experiment.retrain_final`` (the retrain of ``frugalnas run``).
* Ray Train (``frugalnas.runtime.darts_trainer.run_darts_search``, ``TorchTrainer``, Parquet reader):
  one 1-worker run per dataset, checked against the in-process run with the same settings (per-epoch
  alpha digests must match bit for bit, so the in-process numbers stand for the Ray path), and on
  digits 1 vs 2 workers (same seed, same global batch) for the data-parallel speed-up; the Ray
  start-up share is wall time minus the time spent in epochs.

Datasets (work folder outside the repository, ``--work``, default /tmp/frugalnas-darts-selection):

* ``digits``: scikit-learn's real 8x8 digits as ``jobs/darts_digits.yaml`` ingests them (PNG,
  val 0.15, test 0.2: 1,222 train / 360 test), with that job's space, DARTS, selection, embedding
  and retrain settings (20 supernet epochs, subset 100, warm-up 3).
* ``cifar10``: the real CIFAR-10 JPEGs (:func:`common.cifar10_folder`), shrunk to fit a shared 2-core
  CPU: a seeded class-balanced sample (symlinks) of the train and test folders, 32x32 JPEG q75, a
  tiny supernet, 10 search epochs, subset 100 of the 1,000-image weight half (10%; published: 1,000
  of 25,000 = 4%, 50 epochs, C=16, N=5). All shrinkings are in SETTINGS and in the results.

Everything is cached per run in the work folder (delete it to start over), so an interrupted run
continues where it stopped; the results record whether a number came from the cache.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, cifar10_folder, machine, write_results  # noqa: E402

from frugalnas.data import ingest, open_dataset  # noqa: E402
from frugalnas.data.torch_dataset import ImageSplit  # noqa: E402
from frugalnas.embed import load_latents  # noqa: E402
from frugalnas.runtime.experiment import retrain_final  # noqa: E402
from frugalnas.selection.factory import needs_latents  # noqa: E402
from frugalnas.spaces import load_space  # noqa: E402
from frugalnas.train.darts import DartsSettings, make_darts_search, split_loader  # noqa: E402
from frugalnas.embed.latents import ensure_embedding  # noqa: E402

SELECTORS = ("full", "random", "dynamic-random", "dds")
# (label, selector, selection overrides). The main settings' hardness 0.9 turned out to be out of reach
# for the supernet's soft predictions (no image is ever "easy", so dds swaps nothing and equals
# dynamic-random bit for bit); the other published threshold, 0.5, is run next to it so that the
# furthest-neighbour swap is exercised. Not tuned beyond that.
RUNS = [(s, s, {}) for s in SELECTORS] + [
    ("dynamic-random, hardness 0.5", "dynamic-random", {"hardness": 0.5}),
    ("dds, hardness 0.5", "dds", {"hardness": 0.5}),
]
TINY_CELL = {"channels": 8, "cells_per_stage": 1, "stages": 3}
SETTINGS = {
    # = jobs/darts_digits.yaml
    "digits": {
        "ingest": {"codec": "png", "quality": None, "image_size": None, "val_fraction": 0.15, "test_fraction": 0.2},
        "space": {"network": TINY_CELL, "supernet": TINY_CELL},
        "darts": {"epochs": 20, "batch_size": 64, "arch_lr": 0.003},
        "selection": {"subset_size": 100, "hardness": 0.9, "mastery": 0.6, "warmup_epochs": 3, "index": "exact"},
        "embedding": {"kind": "triplet", "latent_dim": 8, "epochs": 20, "image_size": 8},
        "final": {"epochs": 30, "batch_size": 64, "lr": 0.05},
        "seeds": [0, 1, 2],
        "ray": {"selector": "full", "epochs": 6, "workers": [1, 2]},
    },
    "cifar10": {
        # 200 train + 200 test images per class, sampled (seed 0) from the real CIFAR-10 folders
        "sample": {"train_per_class": 200, "test_per_class": 200, "seed": 0},
        "ingest": {"codec": "jpeg", "quality": 75, "image_size": 32, "val_fraction": 0.0, "test_fraction": 0.2},
        "space": {"network": TINY_CELL, "supernet": TINY_CELL},
        "darts": {"epochs": 10, "batch_size": 64, "arch_lr": 0.003},
        # mastery 0.3 (published values: 0.1 to 0.6), fixed before the first CIFAR run: with ~2 weight
        # steps per epoch on 100 images a tiny supernet does not reach 60% on CIFAR-10 in 10 epochs, and
        # then dds would never update (it would be the random control)
        "selection": {"subset_size": 100, "hardness": 0.9, "mastery": 0.3, "warmup_epochs": 3, "index": "exact"},
        # plain AE: the triplet AE collapses on CIFAR-10 (benchmarks/results/selection.md); latent 32 as
        # published, 16 px input to keep it cheap
        "embedding": {"kind": "plain", "latent_dim": 32, "epochs": 10, "image_size": 16},
        "final": {"epochs": 10, "batch_size": 64, "lr": 0.05},
        "seeds": [0, 1, 2],
        "ray": {"selector": "dds", "epochs": None, "workers": [1]},
    },
}
QUICK = {
    "digits": {"darts": {"epochs": 5, "batch_size": 64, "arch_lr": 0.003}, "final": {"epochs": 3, "batch_size": 64, "lr": 0.05},
               "embedding": {"kind": "triplet", "latent_dim": 8, "epochs": 2, "image_size": 8}, "seeds": [0],
               "selection": {"subset_size": 100, "hardness": 0.9, "mastery": 0.6, "warmup_epochs": 1, "index": "exact"},
               "ray": {"selector": "full", "epochs": 2, "workers": [1, 2]}},
    "cifar10": {"sample": {"train_per_class": 30, "test_per_class": 20, "seed": 0},
                "darts": {"epochs": 3, "batch_size": 32, "arch_lr": 0.003}, "final": {"epochs": 2, "batch_size": 64, "lr": 0.05},
                "selection": {"subset_size": 40, "hardness": 0.9, "mastery": 0.6, "warmup_epochs": 1, "index": "exact"},
                "embedding": {"kind": "plain", "latent_dim": 32, "epochs": 1, "image_size": 16}, "seeds": [0],
                "ray": {"selector": "dds", "epochs": None, "workers": [1]}},
}


def log(*parts) -> None:
    print(time.strftime("%H:%M:%S"), *parts, file=sys.stderr, flush=True)


def key(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:12]


class Cache:
    """One JSON file per finished run in the work folder, so an interrupted benchmark resumes."""

    def __init__(self, folder: Path):
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)

    def get(self, name: str, compute):
        path = self.folder / f"{name}.json"
        if path.exists():
            return {**json.loads(path.read_text()), "cached": True}
        value = compute()
        path.write_text(json.dumps(value, default=float) + "\n")
        return {**value, "cached": False}


# ---------------------------------------------------------------- data


def cifar_sample(work: Path, sample: dict) -> Path:
    """A class-balanced, seeded sample of the CIFAR-10 train/test folders, as symlinks."""
    source = cifar10_folder(work)
    out = work / f"cifar10-sample-{sample['train_per_class']}-{sample['test_per_class']}-s{sample['seed']}"
    if (out / "done").exists():
        return out
    rng = np.random.default_rng(sample["seed"])
    for split, per_class in (("train", sample["train_per_class"]), ("test", sample["test_per_class"])):
        for class_dir in sorted(p for p in (source / split).iterdir() if p.is_dir()):
            files = sorted(class_dir.glob("*.jpg"))
            target = out / split / class_dir.name
            target.mkdir(parents=True, exist_ok=True)
            for f in rng.choice(files, size=per_class, replace=False):
                (target / f.name).symlink_to(f)
    (out / "done").write_text("")
    return out


def ensure_dataset(name: str, work: Path, s: dict) -> Path:
    opts = s["ingest"]
    spec = "digits" if name == "digits" else f"folder:{cifar_sample(work, s['sample'])}"
    out = work / f"{name}-{key(spec, opts)}"
    if not (out / "dataset.json").exists():
        log(f"ingesting {spec} -> {out}")
        ingest(spec, out, codec=opts["codec"], quality=opts["quality"], image_size=opts["image_size"],
               val_fraction=opts["val_fraction"], test_fraction=opts["test_fraction"], seed=0, overwrite=True)
    return out


# ---------------------------------------------------------------- one search + retrain


PARAMETER_FREE = ("none", "skip_connect", "avg_pool_3x3")


def ops_of(genotype: str) -> list[str]:
    """The op on each edge of an NB201 genotype string, in order."""
    return re.findall(r"([a-z_0-9]+)~\d+", genotype)


def search_in_process(root: Path, s: dict, space, train: ImageSplit, selector: str, seed: int,
                      latents_path: str | None, overrides: dict) -> dict:
    settings = DartsSettings(**s["darts"], seed=seed)
    selection = {"policy": selector, **s["selection"], **overrides}
    latents = load_latents(latents_path) if needs_latents(selector) else None
    started = time.perf_counter()
    search = make_darts_search(space, train.ids, train.labels, num_classes=len(open_dataset(root).classes),
                               in_channels=train.images.shape[1], settings=settings, selection=selection,
                               latents=latents)
    search.run(split_loader(train))
    wall = time.perf_counter() - started
    weight, arch = search.selector.images_processed, search.arch_images_processed
    hardness = {}
    if hasattr(search.selector, "scores"):  # dds, dynamic-random: why an update did (not) swap images
        scores = np.array(list(search.selector.scores().values()))
        updates = [h for h in search.selector.history if h["updated"]]
        hardness = {"easy_per_update": [int(h["n_easy"]) for h in updates],
                    "final_hardness_max": float(scores.max()), "final_hardness_median": float(np.median(scores)),
                    "final_easy": int((scores > selection["hardness"]).sum())}
    return {"path": "in-process make_darts_search", "genotype": str(search.derive()),
            "weight_images": int(weight), "arch_images": int(arch), "search_images": int(weight + arch),
            "subset_updates": int(search.selector.subset_updates),
            "images_replaced": int(sum(r["replaced"] for r in search.history)), **hardness,
            "trained_epochs": sum(1 for r in search.history if r["trained"]),
            "search_wall_s": round(wall, 2), "epoch_s": [round(r["seconds"], 3) for r in search.history],
            "digests": [r["alphas_digest"] for r in search.history],
            "final_train_accuracy": search.history[-1]["train_accuracy"],
            "final_arch_accuracy": search.history[-1]["arch_accuracy"]}


def retrain(root: Path, s: dict, space, genotype: str, seed: int) -> dict:
    config = SimpleNamespace(final=SimpleNamespace(**s["final"]), seed=seed)
    result = retrain_final(config, space, space.parse(genotype), root, log=lambda _: None)
    result.pop("model")
    return result


# ---------------------------------------------------------------- Ray Train


def ensure_ray() -> None:
    import ray

    if not ray.is_initialized():
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        ray.init(address="local", num_cpus=4, object_store_memory=256 << 20, include_dashboard=False,
                 log_to_driver=False, configure_logging=False)


def ray_search(root: Path, s: dict, space, selector: str, seed: int, workers: int, epochs: int | None,
               latents_path: str | None, storage: Path, name: str) -> dict:
    from frugalnas.runtime.darts_trainer import run_darts_search

    ensure_ray()
    import shutil

    shutil.rmtree(storage / name, ignore_errors=True)
    selection = {"policy": selector, **s["selection"]}
    if needs_latents(selector):
        selection["latents"] = latents_path
    settings = {**s["darts"], "seed": seed}
    result = run_darts_search(root, space, settings, selection, num_workers=workers, storage_path=storage,
                              name=name, stop_after_epoch=epochs)
    epoch_s = [r["seconds"] for r in result["history"]]
    return {"path": f"Ray Train run_darts_search, {workers} worker(s)", "workers": workers,
            "genotype": result["genotype"], "epochs": len(epoch_s),
            "weight_images": int(result["images_processed"]), "arch_images": int(result["arch_images_processed"]),
            "search_images": int(result["images_processed"] + result["arch_images_processed"]),
            "subset_updates": int(result["subset_updates"]),
            "wall_s": round(result["wall_seconds"], 2), "epochs_s": round(sum(epoch_s), 2),
            "epoch_s": [round(x, 3) for x in epoch_s], "startup_and_overhead_s": round(result["wall_seconds"] - sum(epoch_s), 2),
            "digests": [r["alphas_digest"] for r in result["history"]]}


# ---------------------------------------------------------------- per dataset


def bench_dataset(name: str, work: Path, quick: bool, ray: bool) -> dict:
    s = {**SETTINGS[name], **(QUICK[name] if quick else {})}
    cache = Cache(work / "cache")
    started = time.perf_counter()
    root = ensure_dataset(name, work, s)
    dataset = open_dataset(root)
    space = load_space("nb201", s["space"])
    train = ImageSplit(dataset, "train")
    test_size = len(open_dataset(root).labels("test")[0])
    log(f"{name}: {len(train)} train / {test_size} test images, {tuple(train.images.shape[1:])}")
    embedding = ensure_embedding(root, seed=0, **s["embedding"])
    emb = {**s["embedding"], "knn_agreement": embedding["knn_agreement"],
           "pixel_knn_agreement": embedding["pixel_knn_agreement"], "seconds": embedding["seconds"]}
    log(f"{name}: embedding knn agreement {embedding['knn_agreement']} (pixels {embedding['pixel_knn_agreement']})")
    runs = []
    for seed in s["seeds"]:
        for label, selector, overrides in RUNS:
            selection = {**s["selection"], **overrides}
            tag = key(name, root.name, s["darts"], selection if overrides else s["selection"], s["space"],
                      s["embedding"], selector, seed)
            slug = label.replace(", ", "-").replace(" ", "")
            compute = lambda: search_in_process(root, s, space, train, selector, seed, embedding["path"], overrides)
            record = cache.get(f"search-{name}-{slug}-s{seed}-{tag}", compute)
            if "images_replaced" not in record:  # cached by the first version of this script
                if selector in ("full", "random"):
                    record["images_replaced"] = 0  # static selectors never swap
                else:
                    (cache.folder / f"search-{name}-{slug}-s{seed}-{tag}.json").unlink()
                    record = cache.get(f"search-{name}-{slug}-s{seed}-{tag}", compute)
            final_tag = key(name, root.name, s["final"], s["space"], record["genotype"], seed)
            final = cache.get(f"retrain-{name}-s{seed}-{final_tag}", lambda: retrain(root, s, space, record["genotype"], seed))
            record.update(label=label, selector=selector, overrides=overrides, seed=seed, final_test_accuracy=final["final_test_accuracy"],
                          final_params=final["final_params"], retrain_wall_s=final["final_wall_seconds"],
                          retrain_cached=final["cached"])
            runs.append(record)
            log(f"{name} {label:<28} seed {seed}: search images {record['search_images']:>7} "
                f"({record['subset_updates']} updates, {record['images_replaced']} swapped) in {record['search_wall_s']:.1f}s -> "
                f"{record['genotype']}  final acc {record['final_test_accuracy']:.4f}")
    # the noise floor of "equal accuracy": the same cell (full, first seed) retrained with the other seeds
    cell = next(r["genotype"] for r in runs if r["label"] == "full")
    noise = []
    for seed in s["seeds"]:
        final_tag = key(name, root.name, s["final"], s["space"], cell, seed)
        final = cache.get(f"retrain-{name}-s{seed}-{final_tag}", lambda: retrain(root, s, space, cell, seed))
        noise.append(final["final_test_accuracy"])
    log(f"{name}: one cell retrained with seeds {s['seeds']}: {noise}")
    out = {"retrain_noise": {"genotype": cell, "seeds": s["seeds"], "final_test_accuracy": noise,
                             "sd": float(np.std(noise, ddof=1)) if len(noise) > 1 else None},
           "settings": {k: v for k, v in s.items()}, "dataset": {"path": str(root), "train": len(train),
           "test": test_size, "shape": list(train.images.shape[1:])}, "embedding": emb, "runs": runs,
           "summary": summarise(runs), "paired": paired(runs)}
    if ray:
        out["ray"] = ray_checks(name, root, s, space, embedding["path"], runs, work)
    out["seconds"] = round(time.perf_counter() - started, 1)
    return out


def ray_checks(name: str, root: Path, s: dict, space, latents_path: str, runs: list[dict], work: Path) -> dict:
    r = s["ray"]
    seed = s["seeds"][0]
    reference = next(x for x in runs if x["label"] == r["selector"] and x["seed"] == seed)
    out = {"selector": r["selector"], "seed": seed, "epochs": r["epochs"] or s["darts"]["epochs"], "runs": []}
    for workers in r["workers"]:
        tag = key(name, root.name, s["darts"], s["selection"], s["space"], s["embedding"], r, seed, workers)
        record = Cache(work / "cache").get(f"ray-{name}-{r['selector']}-w{workers}-{tag}", lambda: ray_search(
            root, s, space, r["selector"], seed, workers, r["epochs"], latents_path, work / "ray",
            f"{name}-{r['selector']}-w{workers}"))
        n = len(record["digests"])
        record["digests_match_in_process"] = record["digests"] == reference["digests"][:n]
        record["same_genotype_as_in_process_at_end"] = (record["genotype"] == reference["genotype"]
                                                        if n == len(reference["digests"]) else None)
        record["in_process_epochs_s"] = round(sum(reference["epoch_s"][:n]), 2)
        out["runs"].append(record)
        log(f"{name} Ray Train {workers} worker(s), {r['selector']}: {n} epochs in {record['epochs_s']:.1f}s, wall "
            f"{record['wall_s']:.1f}s (start-up/overhead {record['startup_and_overhead_s']:.1f}s); digests match "
            f"in-process: {record['digests_match_in_process']}")
    if len(out["runs"]) == 2:
        one, two = out["runs"]
        out["speedup_epochs"] = round(one["epochs_s"] / two["epochs_s"], 3)
        out["speedup_wall"] = round(one["wall_s"] / two["wall_s"], 3)
        out["per_epoch_s"] = {1: round(one["epochs_s"] / len(one["epoch_s"]), 2),
                              2: round(two["epochs_s"] / len(two["epoch_s"]), 2)}
    return out


# ---------------------------------------------------------------- analysis


def summarise(runs: list[dict]) -> list[dict]:
    rows = []
    for label in dict.fromkeys(r["label"] for r in runs):
        group = [r for r in runs if r["label"] == label]
        acc = np.array([r["final_test_accuracy"] for r in group])
        rows.append({
            "label": label, "selector": group[0]["selector"], "seeds": len(group),
            "search_images_mean": float(np.mean([r["search_images"] for r in group])),
            "search_wall_s_mean": float(np.mean([r["search_wall_s"] for r in group])),
            "subset_updates_mean": float(np.mean([r["subset_updates"] for r in group])),
            "images_replaced_mean": float(np.mean([r["images_replaced"] for r in group])),
            "final_test_accuracy_mean": float(acc.mean()),
            "final_test_accuracy_std": float(acc.std(ddof=1)) if len(acc) > 1 else None,
            "genotypes": [r["genotype"] for r in group],
        })
    return rows


def paired(runs: list[dict]) -> dict:
    """Per seed: full / other search images and wall time, other - full accuracy, edges agreeing with full."""
    by = {(r["label"], r["seed"]): r for r in runs}
    out = {}
    for selector in [label for label in dict.fromkeys(r["label"] for r in runs) if label != "full"]:
        rows = []
        for (sel, seed), r in sorted(by.items()):
            if sel != selector or ("full", seed) not in by:
                continue
            full = by[("full", seed)]
            same_edges = sum(a == b for a, b in zip(ops_of(full["genotype"]), ops_of(r["genotype"])))
            rows.append({"seed": seed, "images_ratio": full["search_images"] / r["search_images"],
                         "wall_ratio": full["search_wall_s"] / r["search_wall_s"],
                         "accuracy_diff": r["final_test_accuracy"] - full["final_test_accuracy"],
                         "edges_same_as_full": same_edges, "edges": len(ops_of(full["genotype"]))})
        diffs = np.array([x["accuracy_diff"] for x in rows])
        out[selector] = {
            "per_seed": rows,
            "images_ratio_mean": float(np.mean([x["images_ratio"] for x in rows])),
            "wall_ratio_mean": float(np.mean([x["wall_ratio"] for x in rows])),
            "accuracy_diff_mean": float(diffs.mean()),
            "accuracy_diff_std": float(diffs.std(ddof=1)) if len(diffs) > 1 else None,
            "wins_vs_full": int((diffs > 0).sum()), "ties": int((diffs == 0).sum()),
        }
    return out


# ---------------------------------------------------------------- report


def fmt_acc(mean, std):
    return f"{mean:.4f}" + (f" ± {std:.4f}" if std is not None else "")


def markdown(results: dict) -> str:
    lines = [
        "DARTS (first order, NAS-Bench-201 cell supernet) with each data selector, side by side in one run: "
        "search cost (images through the supernet in weight + arch steps; wall time) and the test accuracy of "
        "the derived cell retrained from scratch with the same settings for every selector. Ratios and "
        "accuracy differences are paired by seed (same seed = same initialisation, bi-level split and, for "
        "the subset selectors, the same initial subset). Selector runs: in-process `make_darts_search` "
        "(what each Ray Train worker runs); retrain: `retrain_final` of `frugalnas run`; Ray Train checks "
        "below. Wall times are on a shared, loaded 2-core machine (1 torch thread, `nice`): noisy; the "
        "image counts are exact.",
        "",
    ]
    for name, d in results["datasets"].items():
        s = d["settings"]
        lines += [f"### {name}", ""]
        if name == "digits":
            lines.append(f"Set-up = `jobs/darts_digits.yaml`: {d['dataset']['train']} train / {d['dataset']['test']} "
                         f"test images {d['dataset']['shape']}; supernet and retrained network NB201 C=8, 1 cell per "
                         f"stage, 3 stages; {s['darts']['epochs']} search epochs, batch {s['darts']['batch_size']}, "
                         f"arch lr {s['darts']['arch_lr']}; subset {s['selection']['subset_size']} of the "
                         f"{d['dataset']['train'] // 2}-image weight half, warm-up {s['selection']['warmup_epochs']}, "
                         f"hardness {s['selection']['hardness']}, mastery {s['selection']['mastery']}; "
                         f"{s['embedding']['kind']} AE latent {s['embedding']['latent_dim']}; retrain "
                         f"{s['final']['epochs']} epochs on the whole train split.")
        else:
            sm = s["sample"]
            lines.append(
                f"Real CIFAR-10, shrunk to fit: a class-balanced sample of {sm['train_per_class']} train and "
                f"{sm['test_per_class']} test images per class (seed {sm['seed']}) of the JPEG folders, re-encoded JPEG "
                f"q{s['ingest']['quality']} at {s['ingest']['image_size']} px ({d['dataset']['train']} train: weight "
                f"half {d['dataset']['train'] // 2}, arch half {d['dataset']['train'] // 2}; {d['dataset']['test']} "
                f"test). Where it departs from the published set-up (50,000 train, 25,000 weight half, subset "
                f"1,000 = 4% of it, DARTS 50 epochs, C=16 N=5 supernet, second-order variants too): supernet and "
                f"retrained network NB201 C=8, 1 cell per stage, 3 stages; {s['darts']['epochs']} search epochs, "
                f"batch {s['darts']['batch_size']}, arch lr {s['darts']['arch_lr']}; subset "
                f"{s['selection']['subset_size']} = {s['selection']['subset_size'] / (d['dataset']['train'] // 2):.0%} "
                f"of the weight half (so the most a subset selector can save per trained epoch is "
                f"{(d['dataset']['train'] // 2) / s['selection']['subset_size']:.0f}x here, 25x published); "
                f"warm-up {s['selection']['warmup_epochs']}, hardness {s['selection']['hardness']}, mastery "
                f"{s['selection']['mastery']}; {s['embedding']['kind']} AE latent {s['embedding']['latent_dim']} at "
                f"{s['embedding']['image_size']} px, {s['embedding']['epochs']} epochs; retrain "
                f"{s['final']['epochs']} epochs on the {d['dataset']['train']} train images.")
        e = d["embedding"]
        lines += ["", f"Embedding: kNN label agreement (k=5) {e['knn_agreement'].get('5', e['knn_agreement'])} vs raw "
                  f"pixels {e['pixel_knn_agreement'].get('5', e['pixel_knn_agreement'])}.", "",
                  f"| selector | seeds | search images (weight + arch) | search wall s | subset updates (images swapped) | "
                  f"final test accuracy (mean ± sd) | full / this: images | full / this: wall | accuracy − full "
                  f"(paired) | edges same as full |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for row in d["summary"]:
            p = d["paired"].get(row["label"])
            if p:
                edges = sum(x["edges_same_as_full"] for x in p["per_seed"])
                total = sum(x["edges"] for x in p["per_seed"])
                extra = (f"{p['images_ratio_mean']:.1f}x | {p['wall_ratio_mean']:.1f}x | "
                         f"{p['accuracy_diff_mean']:+.4f}" + (f" ± {p['accuracy_diff_std']:.4f}" if p["accuracy_diff_std"] is not None else "")
                         + f" ({p['wins_vs_full']} better, {p['ties']} equal of {len(p['per_seed'])}) | {edges}/{total}")
            else:
                extra = "1x | 1x | 0 | all"
            lines.append(f"| {row['label']} | {row['seeds']} | {row['search_images_mean']:,.0f} | "
                         f"{row['search_wall_s_mean']:.1f} | {row['subset_updates_mean']:.1f} "
                         f"({row['images_replaced_mean']:.0f}) | "
                         f"{fmt_acc(row['final_test_accuracy_mean'], row['final_test_accuracy_std'])} | {extra} |")
        n = d["retrain_noise"]
        lines += ["", f"Noise floor of the accuracy column: full's seed-{n['seeds'][0]} cell retrained with seeds "
                  f"{n['seeds']} scores {', '.join(f'{a:.4f}' for a in n['final_test_accuracy'])} (sd "
                  f"{n['sd']:.4f}); one test image is {1 / d['dataset']['test']:.4f}."]
        lines += ["", "Derived cells (per seed), with the mean number of parameter-free edges (none, skip, avg pool; "
                  "of 6) and the retrained network's parameters:", ""]
        for row in d["summary"]:
            group = [r for r in d["runs"] if r["label"] == row["label"]]
            free = np.mean([sum(op in PARAMETER_FREE for op in ops_of(r["genotype"])) for r in group])
            params = np.mean([r["final_params"] for r in group])
            lines.append(f"- {row['label']} ({free:.1f} parameter-free, {params:,.0f} params): "
                         + "; ".join(f"`{g}`" for g in row["genotypes"]))
        if "ray" in d:
            r = d["ray"]
            lines += ["", f"Ray Train (`run_darts_search`, Parquet reader, {r['selector']} selection, seed {r['seed']}, "
                      f"{r['epochs']} epochs{' (a planned stop)' if r['epochs'] != s['darts']['epochs'] else ''}, "
                      f"global batch {s['darts']['batch_size']}, 0.5 CPU and 1 torch thread per worker):", "",
                      "| workers | epochs s (total) | s / epoch | wall s | Ray start-up + overhead s | in-process epochs s | "
                      "alpha digests = in-process every epoch | derived cell |", "|---|---|---|---|---|---|---|---|"]
            for x in r["runs"]:
                lines.append(f"| {x['workers']} | {x['epochs_s']:.1f} | {x['epochs_s'] / len(x['epoch_s']):.2f} | "
                             f"{x['wall_s']:.1f} | {x['startup_and_overhead_s']:.1f} | {x['in_process_epochs_s']:.1f} | "
                             f"{x['digests_match_in_process']} | `{x['genotype']}` |")
            if len(r["runs"]) > 1:
                lines += ["", "Only the 1-worker run can match the in-process digests: with more workers each "
                          "normalises BatchNorm over its own share of the batch (`sync_batchnorm: false`, the "
                          "default, as DARTS on one device), which changes the search slightly by design."]
            if "speedup_epochs" in r:
                lines += ["", f"2 workers over 1: {r['speedup_epochs']:.2f}x on the epochs, {r['speedup_wall']:.2f}x "
                          "on wall time including Ray Train start-up."]
        lines.append("")
    lines += results.get("interpretation", [])
    return "\n".join(lines)


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results["datasets"])
    fig, axes = plt.subplots(1, len(names), figsize=(6 * len(names), 4.2), squeeze=False)
    colours = {"full": "black", "random": "tab:blue", "dynamic-random": "tab:orange", "dds": "tab:red"}
    for ax, name in zip(axes[0], names):
        runs = results["datasets"][name]["runs"]
        for label in dict.fromkeys(r["label"] for r in runs):
            group = [r for r in runs if r["label"] == label]
            x = [r["search_images"] for r in group]
            y = [r["final_test_accuracy"] for r in group]
            colour, marker = colours[group[0]["selector"]], ("s" if group[0]["overrides"] else "D")
            ax.scatter(x, y, color=colour, alpha=0.5, s=25, marker="o" if marker == "D" else "x")
            ax.scatter([np.mean(x)], [np.mean(y)], color=colour, marker=marker, s=70, label=label,
                       edgecolor="white")
        ax.set_xscale("log")
        ax.set_xlabel("search images processed (weight + arch steps)")
        ax.set_ylabel("retrained test accuracy of the derived cell")
        ax.set_title(f"DARTS 1st order, {name}\n(o/x: seeds; diamond/square: mean; square: hardness 0.5)", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", choices=("digits", "cifar10", "both"), default="both")
    parser.add_argument("--quick", action="store_true", help="smoke test: tiny settings, results not written")
    parser.add_argument("--no-ray", action="store_true", help="skip the Ray Train runs")
    parser.add_argument("--work", type=Path, default=Path(os.environ.get("FRUGALNAS_BENCH_WORK", "/tmp/frugalnas-darts-selection")))
    parser.add_argument("--interpretation", type=Path, help="a text file whose lines end the markdown")
    parser.add_argument("--assemble", action="store_true",
                        help="only rewrite the markdown and plot from results/darts_selection.json (+ --interpretation)")
    args = parser.parse_args()
    if args.assemble:
        results = json.loads((RESULTS / "darts_selection.json").read_text())
        if args.interpretation:
            results["interpretation"] = ["### What it shows", ""] + args.interpretation.read_text().rstrip().splitlines()
        text = markdown(results) + f"\n\nWhole benchmark: {results['seconds'] / 60:.1f} min (cached runs count as 0)."
        write_results("darts_selection", results, text)
        plot(results, RESULTS / "darts_selection.png")
        return
    torch.set_num_threads(1)  # measured: 2 threads on the shared 2 cores ran 10-20x slower than 1
    work = args.work / ("quick" if args.quick else "full")
    started = time.perf_counter()
    names = ("digits", "cifar10") if args.dataset == "both" else (args.dataset,)
    results = {"machine": machine(), "torch_threads": 1, "quick": args.quick, "datasets": {}}
    for name in names:
        results["datasets"][name] = bench_dataset(name, work, args.quick, not args.no_ray)
    results["seconds"] = round(time.perf_counter() - started, 1)
    if args.interpretation and args.interpretation.exists():
        results["interpretation"] = ["### What it shows", ""] + args.interpretation.read_text().rstrip().splitlines()
    text = markdown(results) + f"\n\nWhole benchmark: {results['seconds'] / 60:.1f} min (cached runs count as 0)."
    if args.quick:
        print(text)
        return
    write_results("darts_selection", results, text)
    plot(results, RESULTS / "darts_selection.png")
    import ray

    if ray.is_initialized():
        ray.shutdown()


if __name__ == "__main__":
    main()
