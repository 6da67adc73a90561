"""Plain versus attention (versus triplet) autoencoder on detection data: do the latents group images
with the same objects, and how different is the furthest neighbour DDS swaps in?

    nice .venv/bin/python benchmarks/attention_embedding.py              # BCCD + shapes, 5 seeds (~1.5-2 h on 2 loaded cores)
    nice .venv/bin/python benchmarks/attention_embedding.py --quick      # pilot: 1 seed, 2 epochs (results stay in --work)
    .venv/bin/python benchmarks/attention_embedding.py --render          # re-write the markdown from the JSON

Finished runs are cached in the work folder (``--work``, default /tmp/frugalnas-attention), so an
interrupted run only computes what is missing.

What runs:

* Data: the real BCCD blood-cell set (``voc:`` ../shared/data/bccd/BCCD, 3 classes, its own split
  lists; ingested at 256x256, PNG, so the autoencoder input is the only resize), and the generated
  ``shapes`` set for detection (2,000 images of 32x32 with 1-3 shapes of 4 classes; seeded, carved
  70/10/20). BCCD is skipped with a note when ../shared is absent.
* Autoencoders, each trained on the train split only, the same settings for every kind: ``plain``
  (reconstruction), ``attention`` (the plain network with the box-supervised spatial gate before the
  latent, attention weight 1) and ``triplet`` (reconstruction + batch-hard triplet loss on the
  image's dominant class). BCCD: 128 px input, latent 64, 30 epochs, batch 32; shapes: 32 px, latent
  16, 30 epochs, batch 128. Adam lr 1e-3. Seeds 0-4: a seed fixes initialisation and batch order.
* Measures on the held-out images (val and test pooled: 158 on BCCD, 600 on shapes), the functions
  ``frugalnas embed`` reports with: mean Jaccard of label sets (the classes of an image's boxes)
  between each image and its k = 1, 5, 10 nearest latent neighbours; with its furthest latent
  neighbour overall and within its dominant class (the image DDS would swap in); the attention
  gate's IoU with the box masks; and, independent of any autoencoder, the same on raw pixels (at the
  autoencoder's input size) and over random pairs.
* Intervals: mean and 95% t-interval over the seeds; attention - plain and attention - triplet as
  paired differences per seed (same seed = same initialisation of the shared layers and batch order).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import HERE, machine, write_results  # noqa: E402

from frugalnas.data import ingest, open_dataset  # noqa: E402
from frugalnas.embed import encode, pixel_vectors, train_autoencoder  # noqa: E402
from frugalnas.embed.latents import attention_iou  # noqa: E402
from frugalnas.embed.quality import (  # noqa: E402
    furthest_label_jaccard, knn_agreement, knn_label_jaccard, label_set_matrix, random_label_jaccard)

BCCD = HERE.parent.parent / "shared" / "data" / "bccd" / "BCCD"
NAME = "attention_embedding"
KS = (1, 5, 10)
KINDS = ("plain", "attention", "triplet")
SETTINGS = {
    "bccd": {"source": f"voc:{BCCD}", "ingest": {"image_size": 256, "codec": "png"},
             "image_size": 128, "latent_dim": 64, "epochs": 30, "batch_size": 32},
    "shapes": {"source": "shapes:2000", "ingest": {"task": "detection", "codec": "png", "val_fraction": 0.1,
                                                   "test_fraction": 0.2},
               "image_size": 32, "latent_dim": 16, "epochs": 30, "batch_size": 128},
}
LR = 1e-3


def load(name: str, work: Path) -> dict:
    """Decoded train and held-out (val + test) images, labels, boxes of one data set."""
    settings = SETTINGS[name]
    folder = work / name
    if not (folder / "dataset.json").exists():
        ingest(settings["source"], folder, overwrite=True, **settings["ingest"])
    ds = open_dataset(folder)
    out = {"card": ds.card}
    for part, splits in (("train", ["train"]), ("held_out", ["val", "test"])):
        arrays = [ds.arrays(s) for s in splits]
        boxes = [b for s in splits for b in ds.table(s, ["boxes"])["boxes"].to_pylist()]
        out[part] = {"images": np.concatenate([a[1] for a in arrays]), "labels": np.concatenate([a[2] for a in arrays]),
                     "boxes": boxes}
    return out


def distinct_furthest(vectors) -> float:
    """Share of images that are some image's furthest neighbour: near 1/N when one outlier is
    everybody's furthest neighbour (a hub), near 1 when the furthest neighbours are spread out."""
    x = np.asarray(vectors, dtype=np.float64).reshape(len(vectors), -1)
    sq = (x ** 2).sum(1)
    d2 = sq[:, None] + sq[None, :] - 2 * x @ x.T
    np.fill_diagonal(d2, -np.inf)
    return len(np.unique(d2.argmax(1))) / len(x)


def measure(vectors, sets, labels) -> dict:
    return {
        **{f"jaccard@{k}": knn_label_jaccard(vectors, sets, k) for k in KS},
        "furthest": furthest_label_jaccard(vectors, sets),
        "furthest_same_class": furthest_label_jaccard(vectors, sets, groups=labels),
        "furthest_distinct": distinct_furthest(vectors),
        "dominant_agreement@5": knn_agreement(vectors, labels, 5),
    }


def run_one(data: dict, name: str, kind: str, seed: int, epochs: int, latents_dir: Path) -> dict:
    s = SETTINGS[name]
    train, held = data["train"], data["held_out"]
    started = time.perf_counter()
    model, history = train_autoencoder(
        train["images"], train["labels"], kind=kind, latent_dim=s["latent_dim"], epochs=epochs,
        image_size=s["image_size"], batch_size=s["batch_size"], lr=LR, boxes=train["boxes"], seed=seed)
    seconds = time.perf_counter() - started
    latents = encode(model, held["images"])
    latents_dir.mkdir(parents=True, exist_ok=True)
    np.save(latents_dir / f"{name}-{kind}-{seed}-{epochs}.npy", latents)  # for measures added later
    sets = label_set_matrix(held["boxes"], len(data["card"]["classes"]))
    result = {"kind": kind, "seed": seed, "epochs": epochs, "train_seconds": round(seconds, 1),
              "final_loss": history[-1]["loss"] if history else None, **measure(latents, sets, held["labels"])}
    if kind == "attention":
        result["attention_iou"] = attention_iou(model, held["images"], held["boxes"])
        result["final_attention_loss"] = history[-1]["attention_loss"] if history else None
    return result


def baselines(data: dict, name: str) -> dict:
    held = data["held_out"]
    sets = label_set_matrix(held["boxes"], len(data["card"]["classes"]))
    pixels = pixel_vectors(held["images"], SETTINGS[name]["image_size"])
    classes = data["card"]["classes"]
    patterns = Counter(" + ".join(c for c, present in zip(classes, row) if present) or "(none)" for row in sets)
    from frugalnas.embed import box_masks
    from frugalnas.embed.attention import gate_grid

    covered = box_masks(held["boxes"], gate_grid(SETTINGS[name]["image_size"])) > 0.5
    return {"pixels": measure(pixels, sets, held["labels"]), "random": random_label_jaccard(sets),
            "open_gate_iou": float(covered.mean()),  # an all-open gate's IoU with the box masks
            "held_out_images": len(sets), "train_images": len(data["train"]["labels"]),
            "label_sets": dict(patterns.most_common())}


def interval(values) -> dict:
    """Mean and 95% t-interval half-width over seeds."""
    from scipy import stats

    values = np.asarray([v for v in values if v is not None], dtype=float)
    if len(values) < 2:
        return {"mean": float(values.mean()) if len(values) else None, "half": None, "n": len(values)}
    half = stats.t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / np.sqrt(len(values))
    return {"mean": float(values.mean()), "half": float(half), "n": len(values)}


METRICS = [f"jaccard@{k}" for k in KS] + ["furthest", "furthest_same_class", "furthest_distinct", "dominant_agreement@5"]


def summarise(runs: list[dict]) -> dict:
    by_kind = {k: [r for r in runs if r["kind"] == k] for k in KINDS}
    summary = {kind: {m: interval([r[m] for r in rs]) for m in METRICS + ["attention_iou", "train_seconds"]
                      if rs and m in rs[0]} for kind, rs in by_kind.items() if rs}
    for other in ("plain", "triplet"):
        pairs = {r["seed"]: r for r in by_kind.get(other, [])}
        diffs = [(r, pairs[r["seed"]]) for r in by_kind.get("attention", []) if r["seed"] in pairs]
        if diffs:
            summary[f"attention - {other}"] = {m: interval([a[m] - b[m] for a, b in diffs if a[m] is not None
                                                            and b[m] is not None]) for m in METRICS}
    return summary


def fmt(cell: dict | float | None, digits: int = 3) -> str:
    if cell is None:
        return "-"
    if isinstance(cell, dict):
        if cell["mean"] is None:
            return "-"
        return f"{cell['mean']:.{digits}f}" + (f" ± {cell['half']:.{digits}f}" if cell["half"] is not None else "")
    return f"{cell:.{digits}f}"


def render(payload: dict) -> str:
    lines = [
        "# Attention versus plain autoencoder on detection data",
        "",
        f"Generated by `benchmarks/attention_embedding.py` ({payload['date']}; {payload['machine'].get('cpu', '?')}, "
        f"{payload['machine']['cpu_count']} cores shared with other jobs, 1 torch thread). Every autoencoder is "
        "trained on the train split only; measured on the held-out images (val + test pooled). An image's labels "
        "are the *set* of its boxes' classes; `jaccard@k` is the mean Jaccard of label sets between each image and "
        "its k nearest latent neighbours (higher: the latent groups images with the same objects), `furthest` "
        "the same with its furthest latent neighbour, `furthest same class` with the furthest image of its "
        "dominant class (what DDS swaps in; lower: the swap brings more different objects), `distinct furthest` "
        "the share of images that are somebody's furthest neighbour (small: a few outliers are everybody's), "
        "`dominant agr@5` the share of the 5 nearest neighbours with the same dominant class (largest box), "
        "`gate IoU` the attention gate (> 0.5) against the box masks (> 0.5). Values: mean ± 95% "
        "t-interval over the seeds; differences are paired by seed. Settings are in the script's docstring "
        "and the JSON.",
    ]
    for name, result in payload["datasets"].items():
        if "skipped" in result:
            lines += ["", f"## {name}", "", result["skipped"]]
            continue
        s, base = result["settings"], result["baselines"]
        seeds = sorted({r["seed"] for r in result["runs"]})
        lines += ["", f"## {name}", "",
                  f"{base['train_images']} train / {base['held_out_images']} held-out images; autoencoder input "
                  f"{s['image_size']} px, latent {s['latent_dim']}, {s['epochs']} epochs, batch {s['batch_size']}; "
                  f"seeds {', '.join(map(str, seeds))}. Label sets of the held-out images: "
                  + ", ".join(f"{k} {v}" for k, v in base["label_sets"].items())
                  + f". Random pairs: Jaccard {base['random']:.3f}. An all-open gate has IoU "
                  f"{base['open_gate_iou']:.3f} with the box masks.", "",
                  "| embedding | jaccard@1 | jaccard@5 | jaccard@10 | furthest | furthest same class | distinct furthest "
                  "| dominant agr@5 | gate IoU | train s |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        rows = [("raw pixels", base["pixels"])] + [(k, result["summary"][k]) for k in KINDS if k in result["summary"]]
        rows += [(d, result["summary"][d]) for d in ("attention - plain", "attention - triplet") if d in result["summary"]]
        for label, cells in rows:
            lines.append(f"| {label} | " + " | ".join(fmt(cells.get(m)) for m in METRICS)
                         + f" | {fmt(cells.get('attention_iou'))} | {fmt(cells.get('train_seconds'), 0)} |")
        lines.append(f"| random pairs | {base['random']:.3f} | {base['random']:.3f} | {base['random']:.3f} | "
                     f"{base['random']:.3f} | | | | | |")
    if payload.get("conclusions"):
        lines += ["", "## What this shows", "", payload["conclusions"]]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--datasets", default="bccd,shapes")
    parser.add_argument("--kinds", default=",".join(KINDS))
    parser.add_argument("--epochs", type=int, default=None, help="override every data set's epochs")
    parser.add_argument("--quick", action="store_true", help="1 seed, 2 epochs; results stay in --work")
    parser.add_argument("--work", type=Path, default=Path("/tmp/frugalnas-attention"))
    parser.add_argument("--render", action="store_true", help="only re-write the markdown from the JSON")
    parser.add_argument("--conclusions", type=Path, default=None, help="a markdown file appended as 'What this shows'")
    args = parser.parse_args()
    torch.set_num_threads(1)
    json_path = HERE / "results" / f"{NAME}.json"
    if args.render:
        payload = json.loads(json_path.read_text())
        if args.conclusions:
            payload["conclusions"] = args.conclusions.read_text().strip()
        write_results(NAME, payload, render(payload))
        return
    seeds = 1 if args.quick else args.seeds
    args.work.mkdir(parents=True, exist_ok=True)
    cache_path = args.work / ("runs-quick.json" if args.quick else "runs.json")
    cache = json.loads(cache_path.read_text()) if cache_path.exists() else {}
    payload = {"date": time.strftime("%Y-%m-%d"), "machine": machine(), "datasets": {}}
    for name in args.datasets.split(","):
        if name == "bccd" and not BCCD.is_dir():
            payload["datasets"][name] = {"skipped": f"not measured: {BCCD} is absent"}
            continue
        data = load(name, args.work)
        epochs = 2 if args.quick else (args.epochs or SETTINGS[name]["epochs"])
        runs = []
        for seed in range(seeds):
            for kind in args.kinds.split(","):
                key = f"{name}/{kind}/{seed}/{epochs}"
                if key not in cache:
                    cache[key] = run_one(data, name, kind, seed, epochs, args.work / "latents")
                    cache_path.write_text(json.dumps(cache, indent=1))
                r = cache[key]
                print(f"{name} {kind} seed {seed}: jaccard@5 {r['jaccard@5']:.3f}, furthest {r['furthest']:.3f}, "
                      f"same class {r['furthest_same_class']}, iou {r.get('attention_iou')}, {r['train_seconds']}s",
                      flush=True)
                runs.append(r)
        payload["datasets"][name] = {"settings": {**SETTINGS[name], "epochs": epochs, "lr": LR},
                                     "baselines": baselines(data, name), "runs": runs, "summary": summarise(runs)}
    markdown = render(payload)
    if args.quick:
        (args.work / "quick.md").write_text(markdown + "\n")
        print(markdown)
    else:
        write_results(NAME, payload, markdown)


if __name__ == "__main__":
    main()
