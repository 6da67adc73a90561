"""Detection search on BCCD with full, random and DDS selection, side by side; per-candidate cost.

    nice -n 10 .venv/bin/python benchmarks/detection_search.py            # BCCD: about an hour on 2 idle cores
    .venv/bin/python benchmarks/detection_search.py --quick               # smoke run: generated shapes, tiny settings
    .venv/bin/python benchmarks/detection_search.py --source yolo:/data/bccd-yolo   # another copy of the data

Three experiments run end to end through ``run_experiment`` (what ``frugalnas run`` does: the data
set written as a YOLO folder, one Ray Tune trial per candidate, each an ultralytics model YAML from
``search_spaces/yolo.yaml`` trained by ultralytics' trainer at 128 px; then the best candidate
retrained from scratch on the whole training split and tested on the test split). They differ only
in ``selection.policy``: ``full`` (every candidate trains on all training images every epoch),
``random`` (a static class-balanced random subset) and ``dds`` (a subset DDS re-forms on mastery,
with the thesis per-image hardness). Everything else is equal: the same ingested data and
autoencoder, seed, space, the ``random`` strategy (so all three evaluate the same architectures, in
the same order), candidate budget, epochs per candidate, scheduler (fifo: every candidate trains
all its epochs), concurrency (2 trials) and final retraining.

Measured per experiment: images processed by all candidates (training images only), search wall
time, the best candidate's validation mAP50-95, the retrained best's test mAP50-95 and mAP50, and
how the candidates rank against the full-data ranking (Kendall tau over the same architectures).
Per candidate: seconds per epoch spent training, scoring images for the selector and validating,
and the part of a trial outside its epochs (process set-up, model build, ultralytics' trainer
set-up, checkpoints).
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, machine, write_results  # noqa: E402

from frugalnas.config import parse_config  # noqa: E402
from frugalnas.data import open_dataset  # noqa: E402
from frugalnas.runtime.experiment import prepare_dataset, prepare_embedding, run_experiment  # noqa: E402

HERE = Path(__file__).resolve().parent
BCCD = HERE.parent.parent / "shared" / "data" / "bccd" / "BCCD"
POLICIES = ("full", "random", "dds")
BASE = {
    "seed": 0,
    "dataset": {"codec": "jpeg", "quality": 90},
    "embedding": {"kind": "triplet", "latent_dim": 16, "epochs": 10, "image_size": 64},
    # about half of the training images per epoch. DDS's thresholds are set for a detector's thesis scores, far
    # lower than a classifier's softmax in a short proxy (piloted on BCCD: at most ~0.2 in 8 epochs, and almost
    # no image "right" at confidence 0.25): an image is easy above 0.1, and the subset counts as mastered when
    # 30% of it is easy (the easy-fraction rule)
    "selection": {"subset_size": 100, "hardness": 0.1, "mastery": 0.3, "mastery_rule": "easy-fraction",
                  "warmup_epochs": 2, "index": "exact"},
    "space": "yolo",
    "search": {"strategy": "random", "budget": 12, "scheduler": "fifo", "epochs_per_candidate": 6},
    "final": {"epochs": 15, "batch_size": 8},
    # piloted on BCCD at 128 px: AdamW at lr 0.004 with a step per batch of 16 reaches mAP50-95 ~0.15 in 6 epochs on
    # all training images, but a 100-image subset gets too few steps to rank anything (0.017 after 8 epochs);
    # ultralytics' defaults (auto optimizer, nbs 64, 3 warm-up epochs) stay at 0 for 7 epochs. Batches of 8 double
    # the steps (piloted on shapes: a 128-image subset goes from 0 to 0.13 after 6 epochs)
    "detection": {"image_size": 128, "hardness": "thesis",
                  "train_args": {"optimizer": "AdamW", "lr0": 0.004, "nbs": 8, "warmup_epochs": 1}},
    "resources": {"cpus_per_trial": 1, "max_concurrent_trials": 2},
    "tracking": {"uri": None},
}
QUICK = {
    "dataset": {"source": "shapes:200", "task": "detection", "image_size": 64, "codec": "png"},
    "embedding": {"epochs": 1, "image_size": 32, "latent_dim": 8},
    "selection": {"subset_size": 48, "warmup_epochs": 1},
    "space": {"name": "yolo", "width_multiples": [0.125], "repeats": [1]},
    "search": {"budget": 3, "epochs_per_candidate": 2},
    "final": {"epochs": 2},
    "detection": {"image_size": 64, "train_args": {"nbs": 16, "warmup_epochs": 0, "optimizer": "AdamW", "lr0": 0.003}},
}


def merge(base: dict, extra: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in extra.items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def kendall_tau(a: list[float], b: list[float]) -> float | None:
    from scipy.stats import kendalltau

    if len(a) < 3:
        return None
    tau = kendalltau(a, b).statistic
    return None if np.isnan(tau) else float(tau)


def candidate_costs(out: Path) -> list[dict]:
    """Per trial, from its result.json: mean seconds per epoch in training, scoring and validation,
    and the trainable's seconds outside its epochs."""
    rows = []
    for result_file in sorted((out / "tune" / "search").glob("*/result.json")):
        epochs = [json.loads(line) for line in result_file.read_text().splitlines() if line.strip()]
        if not epochs:
            continue
        last = epochs[-1]
        in_epochs = sum(e["epoch_seconds"] for e in epochs)
        rows.append({"arch": last["arch"], "params": last["params"], "epochs": len(epochs),
                     "images_per_epoch": last["images"],
                     "train_s_per_epoch": float(np.mean([e["train_seconds"] for e in epochs])),
                     "hardness_s_per_epoch": float(np.mean([e["hardness_seconds"] for e in epochs])),
                     "val_s_per_epoch": float(np.mean([e["val_seconds"] for e in epochs])),
                     "trial_seconds": last["seconds"], "setup_seconds": last.get("setup_seconds"),
                     "outside_epochs_seconds": last["seconds"] - in_epochs})
    return rows


def run(policy: str, config: dict, out: Path, log) -> dict:
    experiment = parse_config(merge(config, {"name": f"detect-{policy}", "selection": {"policy": policy}}))
    started = time.perf_counter()
    summary = run_experiment(experiment, out, log=log)
    costs = candidate_costs(out)
    return {"policy": policy, "summary_path": str(out / "summary.json"), "best_arch": summary["best_arch"],
            "search_images_processed": summary["search_images_processed"],
            "search_wall_seconds": summary["search_wall_seconds"],
            "best_val_map50_95": max(t["map50_95"] for t in summary["trials"] if t["map50_95"] is not None),
            "final_test_map50_95": summary["final_test_map50_95"], "final_test_map50": summary["final_test_map50"],
            "final_params": summary["final_params"], "final_wall_seconds": summary["final_wall_seconds"],
            "total_wall_seconds": time.perf_counter() - started,
            "trials": [{k: t.get(k) for k in ("arch", "candidate", "map50_95", "map50", "params", "images_processed",
                                              "subset_updates", "seconds")} for t in summary["trials"]],
            "subset_updates_per_candidate": float(np.mean([t.get("subset_updates") or 0 for t in summary["trials"]])),
            "candidate_costs": costs}


def markdown(payload: dict) -> str:
    runs = payload["runs"]
    cfg = payload["config"]
    lines = [
        f"{payload['data']}. Measured {payload['date']} ({payload['machine'].get('cpu', '?')}, "
        f"{payload['machine']['cpu_count']} cores, shared with other jobs). Each row is one `frugalnas run`: "
        f"{cfg['search']['budget']} candidates (random strategy: the same architectures in every row) from "
        f"`search_spaces/yolo.yaml`, {cfg['search']['epochs_per_candidate']} epochs each at "
        f"{cfg['detection']['image_size']} px (ultralytics' trainer, batch {cfg['final']['batch_size']}, "
        f"train_args {cfg['detection']['train_args']}), fifo, 2 trials at a time; then the best retrained "
        f"{cfg['final']['epochs']} epochs on all training images and tested. random and dds train on "
        f"{cfg['selection']['subset_size']} images per epoch.",
        "",
        "| selection | images processed | subset updates per candidate | search wall s | best val mAP50-95 | "
        "ranking vs full (Kendall tau) | retrained best: test mAP50-95 | test mAP50 | best architecture |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in runs:
        tau = "-" if r["policy"] == "full" else ("n/a" if r.get("kendall_tau_vs_full") is None
                                                 else f"{r['kendall_tau_vs_full']:.2f}")
        lines.append(f"| {r['policy']} | {r['search_images_processed']:,} | {r['subset_updates_per_candidate']:.1f} | "
                     f"{r['search_wall_seconds']:.0f} | "
                     f"{r['best_val_map50_95']:.4f} | {tau} | {r['final_test_map50_95']:.4f} | "
                     f"{r['final_test_map50']:.4f} | `{r['best_arch']}` |")
    lines += ["", "Per candidate (mean over the candidates of each run; seconds per epoch):", "",
              "| selection | images/epoch | training s | scoring for the selector s | validation + checkpoint s | "
              "trial s | outside the epochs s (share) | of which set-up before epoch 1 s |",
              "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in runs:
        c = r["candidate_costs"]
        if not c:
            continue
        trial = np.mean([x["trial_seconds"] for x in c])
        outside = np.mean([x["outside_epochs_seconds"] for x in c])
        lines.append(f"| {r['policy']} | {np.mean([x['images_per_epoch'] for x in c]):.0f} | "
                     f"{np.mean([x['train_s_per_epoch'] for x in c]):.2f} | "
                     f"{np.mean([x['hardness_s_per_epoch'] for x in c]):.2f} | "
                     f"{np.mean([x['val_s_per_epoch'] for x in c]):.2f} | {trial:.1f} | "
                     f"{outside:.1f} ({100 * outside / trial:.0f}%) | "
                     f"{np.mean([x['setup_seconds'] for x in c]):.1f} |")
    by = {r["policy"]: r for r in runs}
    if "full" in by:
        full = by["full"]
        for r in runs:
            if r is full:
                continue
            lines.append("")
            lines.append(
                f"{r['policy']} against full: {100 * r['search_images_processed'] / full['search_images_processed']:.0f}% "
                f"of the images, {100 * r['search_wall_seconds'] / full['search_wall_seconds']:.0f}% of the search wall "
                f"time; best validation mAP50-95 {r['best_val_map50_95'] - full['best_val_map50_95']:+.4f}, retrained "
                f"best's test mAP50-95 {r['final_test_map50_95'] - full['final_test_map50_95']:+.4f} "
                f"({'the same' if r['best_arch'] == full['best_arch'] else 'a different'} best architecture).")
    lines += ["", payload["reading"].format(epochs=cfg["search"]["epochs_per_candidate"],
                                            budget=cfg["search"]["budget"], train=payload["train_images"])]
    if payload.get("conclusions"):
        lines += ["", payload["conclusions"]]
    return "\n".join(lines)


READING = """What this can show: the cost side is solid (images processed and wall time come from the same
candidates and the same code path, only the selection differs), and the per-candidate split says where a
trial's time goes. What it cannot show: whether DDS finds better detectors. {budget} candidates, each trained
for {epochs} epochs on {train} images, give validation mAPs within a few points of one another, and one seed of one
search is one sample; the retrained best's test mAP depends as much on which candidate a noisy proxy ranked
first as on the selection policy. The Kendall tau column is the better reading of a selection policy here:
how far a cheaper proxy reorders the same candidates relative to the full-data proxy (itself only an
{epochs}-epoch proxy of the real ranking)."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", default=f"voc:{BCCD}", help="dataset source [default: the shared BCCD copy]")
    parser.add_argument("--work", default="/tmp/frugalnas-bench/detection", help="work folder")
    parser.add_argument("--quick", action="store_true", help="tiny smoke run on generated shapes")
    parser.add_argument("--policies", default=",".join(POLICIES))
    parser.add_argument("--render", action="store_true", help="only re-write the markdown from the JSON")
    parser.add_argument("--conclusions", type=Path, default=None,
                        help="with --render: a markdown file appended as what this run shows")
    args = parser.parse_args()
    if args.render:
        payload = json.loads((RESULTS / "detection_search.json").read_text())
        if args.conclusions:
            payload["conclusions"] = args.conclusions.read_text().strip()
        write_results("detection_search", payload, markdown(payload))
        return

    config = merge(BASE, QUICK) if args.quick else merge(BASE, {"dataset": {"source": args.source}})
    work = Path(args.work) / ("quick" if args.quick else "bccd")
    config["dataset"]["path"] = str(work / "dataset")
    log = lambda message: print(message, file=sys.stderr, flush=True)  # noqa: E731

    # ingest and embed once: every run reuses them (the autoencoder is a one-off cost per data set)
    prepared = parse_config(merge(config, {"name": "prepare", "selection": {"policy": "dds"}}))
    dataset_dir = prepare_dataset(prepared, work, log)
    started = time.perf_counter()
    embedding = prepare_embedding(prepared, dataset_dir, log)
    embed_seconds = time.perf_counter() - started
    card = open_dataset(dataset_dir).card

    runs = []
    for policy in args.policies.split(","):
        log(f"== {policy}")
        runs.append(run(policy, config, work / policy, log))
    by_policy = {r["policy"]: r for r in runs}
    if "full" in by_policy:
        reference = {t["arch"]: t["map50_95"] for t in by_policy["full"]["trials"]}
        for r in runs:
            shared = [t for t in r["trials"] if t["arch"] in reference and t["map50_95"] is not None]
            r["kendall_tau_vs_full"] = kendall_tau([reference[t["arch"]] for t in shared],
                                                   [t["map50_95"] for t in shared])
    data = (f"BCCD ({card['splits']['train']} train / {card['splits'].get('val', 0)} val / "
            f"{card['splits'].get('test', 0)} test images, 3 classes, stored as JPEG q{card['quality']})"
            if not args.quick else "Quick smoke run on generated shapes")
    payload = {"date": date.today().isoformat(), "machine": machine(), "data": data, "source": config["dataset"]["source"],
               "config": config, "embedding_seconds": embed_seconds, "train_images": card["splits"]["train"],
               "embedding": {k: embedding[k] for k in ("kind", "latent_dim", "knn_agreement")} if embedding else None,
               "runs": runs, "reading": READING}
    name = "detection_search" if not args.quick else "detection_search_quick"
    if args.quick:
        print(markdown(payload))
        (work / f"{name}.json").write_text(json.dumps(payload, indent=2) + "\n")
        return
    write_results(name, payload, markdown(payload))


if __name__ == "__main__":
    main()
