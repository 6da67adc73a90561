"""DDS repairs and the embedding fix, measured: which training order should be the default, what the
no-op-update rule recovers, and whether the repaired triplet autoencoder beats raw pixels on CIFAR-10.

    nice -n 10 .venv/bin/python benchmarks/selection_repairs.py                 # everything (~2 h on 2 loaded cores)
    nice -n 10 .venv/bin/python benchmarks/selection_repairs.py --part order    # one part: order, embedding
    .venv/bin/python benchmarks/selection_repairs.py --render                   # markdown from the JSON

Finished runs are cached in the work folder (``--work``, default /tmp/frugalnas-repairs), so an
interrupted benchmark resumes. FRUGALNAS_CIFAR10=/path points at the CIFAR-10 JPEG tree.

Parts:

* ``order``: the subset's training order, ``curriculum`` (strictly easiest first, the published
  order), ``blocks`` (the curriculum cut into 4 blocks, each shuffled) and ``shuffled`` (a fresh random
  order each epoch). First with the order alone: ``dynamic-random`` with a warm-up as long as the run,
  so no update ever happens and the subset is exactly ``random``'s (same seed, same initial
  class-balanced subset, same initialisation); then with updates that do swap images
  (``easy_quantile`` 0.8: the easiest fifth of the subset is replaced at each update, mastery 0.6,
  warm-up 5). ``baseline:cnn``, SGD lr 0.05 cosine, batch 64, the library defaults; digits (16 px PNG,
  subset 100, 30 epochs) and CIFAR-10 (32 px JPEG q75, subset 1,000, 30 epochs); paired by seed.
  The same runs count the *no-op updates* of the papers' rule (hardness 0.9, mastery 0.6): update
  epochs that would have swapped nothing, which trained nothing before the repair and train now.
* ``embedding``: label agreement of the 5 and 10 nearest neighbours (held-out test split) of the
  triplet autoencoder before the fix (recipe 1: batch-hard triplet loss with margin 1 on raw latents)
  and after (recipe 2, see ``frugalnas.embed.autoencoder.TripletAutoencoder``), the plain autoencoder
  and raw pixels, on CIFAR-10 (latent 32, 16 px input, trained on a class-balanced 10,000 of the
  training split for 6 epochs, measured on a class-balanced 2,000 of the test split), several seeds.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, cifar10_folder, machine, write_results  # noqa: E402

from frugalnas.data import ingest, open_dataset  # noqa: E402
from frugalnas.data.torch_dataset import ImageSplit  # noqa: E402
from frugalnas.selection.base import balanced_subset  # noqa: E402
from frugalnas.selection.factory import selector_from_settings  # noqa: E402
from frugalnas.train.classify import TrainSettings, evaluate, train_with_selector  # noqa: E402
from frugalnas.train.models import build_arch  # noqa: E402

NAME = "selection_repairs"
ARCH = "baseline:cnn"
ORDERS = ("curriculum", "blocks", "shuffled")
DATASETS = {
    "digits": {"ingest": {"codec": "png", "quality": None, "image_size": 16}, "subset_size": 100, "epochs": 30,
               "seeds": 5, "update_seeds": 5},
    "cifar10": {"ingest": {"codec": "jpeg", "quality": 75, "image_size": 32, "val_fraction": 0.0},
                "subset_size": 1000, "epochs": 30, "seeds": 3, "update_seeds": 2},
}
EMBEDDING = {"latent_dim": 32, "image_size": 16, "epochs": 6, "train_images": 10_000, "test_images": 2_000,
             "seeds": 3}


def log(*parts) -> None:
    print(time.strftime("%H:%M:%S"), *parts, file=sys.stderr, flush=True)


def ensure_dataset(name: str, work: Path) -> Path:
    opts = DATASETS[name]["ingest"]
    out = work / f"{name}-{opts['codec']}{opts['quality'] or ''}-{opts['image_size']}px"
    if (out / "dataset.json").exists():
        return out
    spec = "digits" if name == "digits" else f"folder:{cifar10_folder(work)}"
    log(f"ingesting {spec} -> {out}")
    ingest(spec, out, codec=opts["codec"], quality=opts["quality"], image_size=opts["image_size"],
           val_fraction=opts.get("val_fraction", 0.1), overwrite=True)
    return out


# ---------------------------------------------------------------- order


def order_runs(name: str) -> list[tuple[str, str, dict, int]]:
    """(label, policy, selector params, seed) of every run of the order part on ``name``."""
    s = DATASETS[name]
    runs = []
    for seed in range(s["seeds"]):
        runs.append(("random", "random", {}, seed))
        for order in ORDERS:
            runs.append((f"order only: {order}", "dynamic-random", {"order": order, "warmup_epochs": s["epochs"]}, seed))
    for seed in range(s["update_seeds"]):
        for order in ORDERS:
            runs.append((f"with updates: {order}", "dynamic-random",
                         {"order": order, "easy_quantile": 0.8, "mastery": 0.6, "warmup_epochs": 5}, seed))
        runs.append(("papers' rule (hardness 0.9)", "dynamic-random", {"hardness": 0.9, "mastery": 0.6,
                                                                       "warmup_epochs": 5}, seed))
    return runs


def run_order(name: str, root: Path, data: dict, label: str, policy: str, params: dict, seed: int,
              cache: Path) -> dict:
    s = DATASETS[name]
    key = json.dumps({"dataset": name, "label": label, "policy": policy, "params": params, "seed": seed,
                      "subset": s["subset_size"], "epochs": s["epochs"], "version": 1}, sort_keys=True)
    path = cache / f"{hashlib.sha256(key.encode()).hexdigest()[:20]}.json"
    if path.exists():
        record = json.loads(path.read_text())
        log(f"{name} {label:<32} seed {seed}: acc {record['test_accuracy']:.4f} (cached)")
        return record
    started = time.perf_counter()
    torch.manual_seed(seed)
    model, _ = build_arch(ARCH, data["classes"], data["channels"])
    selector = selector_from_settings(policy, data["train"].ids, data["train"].labels, subset_size=s["subset_size"],
                                      total_epochs=s["epochs"], seed=seed, **params)
    history = train_with_selector(model, data["train"], selector, TrainSettings(epochs=s["epochs"], seed=seed))
    record = {
        "dataset": name, "label": label, "policy": policy, "params": params, "seed": seed,
        "test_accuracy": evaluate(model, data["test"]),
        "images_processed": selector.images_processed,
        "subset_updates": selector.subset_updates,
        "trained_epochs": sum(r.trained for r in history),
        "noop_updates": sum(bool(h.get("noop_update")) for h in selector.history),
        "replaced": sum(h["replaced"] for h in selector.history),
        "seconds": round(time.perf_counter() - started, 1),
        "threads": torch.get_num_threads(),
    }
    path.write_text(json.dumps(record))
    log(f"{name} {label:<32} seed {seed}: acc {record['test_accuracy']:.4f} images {record['images_processed']} "
        f"updates {record['subset_updates']} no-op {record['noop_updates']} ({record['seconds']:.0f}s)")
    return record


def part_order(work: Path, datasets: list[str]) -> dict:
    out = {}
    for name in datasets:
        root = ensure_dataset(name, work)
        dataset = open_dataset(root)
        data = {"train": ImageSplit(dataset, "train"), "test": ImageSplit(dataset, "test"),
                "classes": len(dataset.classes), "channels": dataset.channels}
        cache = work / "runs-cache"
        cache.mkdir(parents=True, exist_ok=True)
        records = [run_order(name, root, data, *run, cache=cache) for run in order_runs(name)]
        out[name] = {"settings": {k: v for k, v in DATASETS[name].items() if k != "ingest"},
                     "ingest": DATASETS[name]["ingest"], "train_images": len(data["train"]),
                     "test_images": len(data["test"]), "runs": records}
    return out


# ---------------------------------------------------------------- embedding


def register_recipe_1() -> str:
    """The triplet autoencoder as it was before the fix (recipe 1), registered under a benchmark-only
    name so the same training loop runs both: batch-hard triplets on the raw latents, margin 1."""
    import torch.nn.functional as F

    from frugalnas.embed.autoencoder import AUTOENCODERS, TripletAutoencoder, batch_hard_triplet_loss

    name = "triplet-recipe1"
    if name not in AUTOENCODERS.names():
        @AUTOENCODERS.register(name)
        class TripletRecipe1(TripletAutoencoder):
            recipe = 1

            def __init__(self, channels, image_size, latent_dim, *, margin: float = 1.0, **kwargs):
                super().__init__(channels, image_size, latent_dim, margin=1.0, **kwargs)

            def objective(self, x, labels, masks=None):
                recon, z = self(x)
                recon_loss = F.mse_loss(recon, x)
                triplet_loss = batch_hard_triplet_loss(z, labels, self.margin)
                return {"loss": recon_loss + triplet_loss, "recon_loss": recon_loss, "triplet_loss": triplet_loss}
    return name


def part_embedding(work: Path) -> dict:
    from frugalnas.embed.autoencoder import AUTOENCODERS
    from frugalnas.embed.quality import knn_agreement, pixel_vectors
    from frugalnas.embed.training import encode, train_autoencoder

    e = EMBEDDING
    dataset = open_dataset(ensure_dataset("cifar10", work))
    rng = np.random.default_rng(0)
    train_ids = np.sort(balanced_subset(*dataset.labels("train"), e["train_images"], rng))
    test_ids = np.sort(balanced_subset(*dataset.labels("test"), e["test_images"], rng))
    _, train_images, train_labels = dataset.arrays("train", ids=train_ids)
    _, test_images, test_labels = dataset.arrays("test", ids=test_ids)
    pixels = pixel_vectors(test_images, e["image_size"])
    rows = [{"variant": "raw pixels", "seed": None, **{f"knn@{k}": knn_agreement(pixels, test_labels, k)
                                                       for k in (5, 10)}}]
    triplet = AUTOENCODERS.get("triplet")
    variants = [("triplet, recipe 1 (before)", register_recipe_1()),
                (f"triplet, recipe {triplet.recipe} (after)", "triplet"),
                ("plain", "plain")]
    cache = work / "embed-cache"
    cache.mkdir(parents=True, exist_ok=True)
    for label, kind in variants:
        for seed in range(e["seeds"]):
            key = json.dumps({"label": label, "seed": seed, **e, "recipe": AUTOENCODERS.get(kind).recipe},
                             sort_keys=True)
            path = cache / f"{hashlib.sha256(key.encode()).hexdigest()[:20]}.json"
            if path.exists():
                rows.append(json.loads(path.read_text()))
                continue
            started = time.perf_counter()
            model, history = train_autoencoder(train_images, train_labels, kind=kind, latent_dim=e["latent_dim"],
                                               epochs=e["epochs"], image_size=e["image_size"], seed=seed)
            latents = encode(model, test_images)
            row = {"variant": label, "seed": seed, **{f"knn@{k}": knn_agreement(latents, test_labels, k)
                                                      for k in (5, 10)},
                   "latent_std": float(latents.std(0).mean()), "final_loss": history[-1]["loss"],
                   "final_triplet_loss": history[-1].get("triplet_loss"),
                   "seconds": round(time.perf_counter() - started, 1)}
            path.write_text(json.dumps(row))
            rows.append(row)
            log(f"embedding {label:<28} seed {seed}: knn@5 {row['knn@5']:.3f} std {row['latent_std']:.3g} "
                f"({row['seconds']:.0f}s)")
    return {"settings": e, "rows": rows}


# ---------------------------------------------------------------- report


def mean_std(values: list[float], scale: float = 1.0) -> str:
    values = [v * scale for v in values]
    if len(values) == 1:
        return f"{values[0]:.1f}"
    return f"{np.mean(values):.1f} ± {np.std(values, ddof=1):.1f}"


def render(payload: dict) -> str:
    lines = ["# DDS repairs and the embedding fix", "",
             f"Produced by `benchmarks/selection_repairs.py` (read its docstring for the method). Machine: "
             f"{payload['machine'].get('cpu', '?')}, {payload['machine'].get('cpu_count')} cores shared with other "
             f"jobs; commit {payload['machine'].get('commit')}.", ""]
    for name, part in payload.get("order", {}).items():
        s = part["settings"]
        lines += [f"## Training order and no-op updates: {name}", "",
                  f"{part['train_images']} train / {part['test_images']} test images; `{ARCH}`, subset "
                  f"{s['subset_size']}, {s['epochs']} epochs, SGD lr 0.05 cosine, batch 64; test accuracy on the "
                  "whole test split.", "",
                  "| run | seeds | test accuracy % | images processed | subset updates | no-op updates | replaced |",
                  "|---|---|---|---|---|---|---|"]
        by_label: dict[str, list[dict]] = {}
        for r in part["runs"]:
            by_label.setdefault(r["label"], []).append(r)
        for label, runs in by_label.items():
            lines.append(f"| {label} | {len(runs)} | {mean_std([r['test_accuracy'] for r in runs], 100)} | "
                         f"{np.mean([r['images_processed'] for r in runs]):,.0f} | "
                         f"{np.mean([r['subset_updates'] for r in runs]):.1f} | "
                         f"{np.mean([r['noop_updates'] for r in runs]):.1f} | "
                         f"{np.mean([r['replaced'] for r in runs]):.0f} |")
        lines += ["", "Paired by seed (same initial subset and initialisation), test accuracy difference in points:", "",
                  "| a - b | seeds | mean ± std | a better |", "|---|---|---|---|"]
        pairs = [(f"order only: {o}", "random") for o in ORDERS]
        pairs += [(f"order only: {o}", "order only: curriculum") for o in ORDERS[1:]]
        pairs += [(f"with updates: {o}", "with updates: curriculum") for o in ORDERS[1:]]
        pairs += [(f"with updates: {o}", "random") for o in ORDERS]
        for a, b in pairs:
            ra = {r["seed"]: r["test_accuracy"] for r in by_label.get(a, [])}
            rb = {r["seed"]: r["test_accuracy"] for r in by_label.get(b, [])}
            seeds = sorted(set(ra) & set(rb))
            if not seeds:
                continue
            diff = [100 * (ra[k] - rb[k]) for k in seeds]
            spread = f" ± {np.std(diff, ddof=1):.1f}" if len(diff) > 1 else ""
            lines.append(f"| {a} - {b} | {len(seeds)} | {np.mean(diff):+.1f}{spread} | "
                         f"{sum(d > 0 for d in diff)}/{len(seeds)} |")
        lines.append("")
    if "embedding" in payload:
        part = payload["embedding"]
        e = part["settings"]
        lines += ["## Triplet autoencoder on CIFAR-10: before and after the fix", "",
                  f"Latent {e['latent_dim']}, {e['image_size']} px input, {e['epochs']} epochs on a class-balanced "
                  f"{e['train_images']:,} training images; label agreement of the k nearest neighbours on a "
                  f"class-balanced {e['test_images']:,} test images (chance 0.10).", "",
                  "| embedding | seeds | knn@5 | knn@10 | latent std (mean over dims) | final triplet loss | seconds |",
                  "|---|---|---|---|---|---|---|"]
        by_variant: dict[str, list[dict]] = {}
        for r in part["rows"]:
            by_variant.setdefault(r["variant"], []).append(r)
        for variant, rows in by_variant.items():
            def fmt(key, rows=rows):
                values = [r[key] for r in rows if r.get(key) is not None]
                if not values:
                    return "-"
                return (f"{np.mean(values):.3f}" if len(values) == 1
                        else f"{np.mean(values):.3f} ± {np.std(values, ddof=1):.3f}")
            lines.append(f"| {variant} | {len([r for r in rows if r['seed'] is not None]) or '-'} | {fmt('knn@5')} | "
                         f"{fmt('knn@10')} | {fmt('latent_std')} | {fmt('final_triplet_loss')} | {fmt('seconds')} |")
        lines.append("")
    if payload.get("interpretation"):
        lines += ["## Interpretation", "", payload["interpretation"].strip(), ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=["order", "embedding", "all"], default="all")
    parser.add_argument("--dataset", choices=["digits", "cifar10", "both"], default="both")
    parser.add_argument("--work", type=Path, default=Path("/tmp/frugalnas-repairs"))
    parser.add_argument("--render", action="store_true", help="only re-render the markdown from the JSON")
    args = parser.parse_args()
    json_path = RESULTS / f"{NAME}.json"
    payload = json.loads(json_path.read_text()) if json_path.exists() else {}
    interpretation = HERE_INTERPRETATION.read_text() if HERE_INTERPRETATION.exists() else ""
    if not args.render:
        torch.set_num_threads(1)
        args.work.mkdir(parents=True, exist_ok=True)
        datasets = ["digits", "cifar10"] if args.dataset == "both" else [args.dataset]
        if args.part in ("order", "all"):
            payload.setdefault("order", {}).update(part_order(args.work, datasets))
        if args.part in ("embedding", "all"):
            payload["embedding"] = part_embedding(args.work)
        payload["machine"] = machine()
    payload["interpretation"] = interpretation
    write_results(NAME, payload, render(payload))


HERE_INTERPRETATION = Path(__file__).resolve().parent / "results" / f"{NAME}_interpretation.md"

if __name__ == "__main__":
    main()
