"""The compression study on real data: what JPEG and H.264 compression of the test images costs a
small CNN, what retraining on compressed images recovers, and two-stage NAS under compression.

    nice -n 10 .venv/bin/python benchmarks/compression.py                    # MNIST + CIFAR-10 (hours on a shared 2-core machine)
    nice -n 10 .venv/bin/python benchmarks/compression.py --dataset mnist    # one of them
    .venv/bin/python benchmarks/compression.py --quick                       # smoke run, tiny settings

Each study is one ``run_compression`` (what ``frugalnas compression`` does), resumable: a stopped
run continues where it stopped when started again (its work folder is kept under
``$FRUGALNAS_BENCH_WORK``, default /tmp/frugalnas-bench).

* **MNIST** (``jobs/compression_mnist.yaml`` as shipped): the real MNIST test split, never
  lossy-compressed (10,000 images, pooled and carved into train/val/test), stored as PNG. JPEG and
  H.264 levels on the test split, recovery at two levels per codec, and two-stage NAS at H.264
  CRF 46 (evolution + DDS over a small NAS-Bench-201 space, searched on reference and on CRF-46
  data, each result retrained on both).
* **CIFAR-10**: the real CIFAR-10 JPEG folder, which is already JPEG q75: the reference is "q75 as
  shipped", stored losslessly (PNG) so that every level compresses it once more. A class-balanced,
  seeded sample sized for this machine (``CIFAR_SAMPLE``); the JPEG levels add CIFAR-10-C's
  qualities (80, 65, 58, 50, 40) for comparison with its published numbers. No two-stage search;
  2 models per configuration instead of 3 (time).

Every model is the built-in ``baseline:cnn``, trained ``repeats`` times (seeds 0, 1, 2 on MNIST) per
configuration; intervals are paired bootstrap intervals over the test images and the seeds.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import shutil
import sys
import time
from datetime import date
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, cifar10_folder, machine, write_results  # noqa: E402
from search_cost import cifar_sample  # noqa: E402

from frugalnas.compression.levels import CIFAR10C_JPEG_QUALITIES, PUBLISHED_KNEES, Level  # noqa: E402
from frugalnas.config import parse_config  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SHARED_MNIST = ROOT.parent / "shared" / "data" / "mnist"
# 5,000 train (4,500 after val), 5,000 test: 15 models of the 9,000-image sample took longer than a
# session on the shared 2 cores, so the sample and the repeats (2) are sized to about an hour
CIFAR_SAMPLE = {"train_per_class": 500, "test_per_class": 500}
# CIFAR-10-C (Hendrycks & Dietterich 2019), JPEG corruption at severities 1-5 (qualities 80, 65, 58, 50, 40):
# WideResNet-28-10 (94.78% clean), as reported by RobustBench
CIFAR10C_WRN = {"clean": 94.78, 80: 86.4, 65: 79.7, 58: 78.0, 50: 74.2, 40: 69.7}

STUDIES = {
    "mnist": {"overrides": {}},
    "cifar10": {
        "overrides": {
            "dataset": {"pool_splits": False, "val_fraction": 0.1, "test_fraction": 0.0},
            "compression": {"reference_label": "jpeg q75 as shipped",
                            "levels": {"jpeg": [95, 80, 75, 65, 58, 50, 40, 30, 20, 15, 10, 5],
                                       "h264": [10, 18, 23, 28, 33, 37, 40, 43, 46, 51]},
                            "two_stage": {}, "repeats": 2},
        },
    },
}
QUICK = {
    "final": {"epochs": 1},
    "compression": {"levels": {"jpeg": [50, 10], "h264": [40]}, "recovery": {"jpeg": [10]}, "repeats": 1,
                    "bootstrap": 200},
    "search": {"budget": 2, "epochs_per_candidate": 1},
    "embedding": {"epochs": 1},
}


def log(*parts) -> None:
    print(time.strftime("%H:%M:%S"), *parts, flush=True)


def merge(base: dict, extra: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in extra.items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) and \
            key not in ("levels", "recovery", "two_stage") else copy.deepcopy(value)
    return out


def study_config(name: str, quick: bool, work: Path):
    data = yaml.safe_load((ROOT / "jobs" / "compression_mnist.yaml").read_text())
    data = merge(data, STUDIES[name]["overrides"])
    about = None
    if name == "mnist":
        if not SHARED_MNIST.exists():
            raise SystemExit(f"MNIST not found at {SHARED_MNIST}")
        data["dataset"]["source"] = f"mnist:{SHARED_MNIST}"
    else:
        sample = {"train_per_class": 60, "test_per_class": 40} if quick else CIFAR_SAMPLE
        tag = f"train{sample['train_per_class']}-test{sample['test_per_class']}"
        folder = work / f"cifar10-sample-{tag}"
        if not (folder / "test").is_dir():
            cifar_sample(cifar10_folder(), folder, sample["train_per_class"], sample["test_per_class"])
        data["dataset"]["source"] = f"folder:{folder}"
        about = (f"a class-balanced, seeded sample of {sample['train_per_class']} training and "
                 f"{sample['test_per_class']} test images per class")
    if quick:
        data = merge(data, QUICK)
        if name == "mnist":
            data["compression"]["two_stage"] = {"h264": [40]}
    data["name"] = f"compression_{name}" + ("_quick" if quick else "")
    return parse_config(data, f"benchmarks/compression.py:{name}"), data, about


def run_study(name: str, quick: bool, work: Path) -> dict:
    from frugalnas.runtime.compression import run_compression

    config, data, about = study_config(name, quick, work)
    out = work / config.name
    log(f"== {name}: {out}")
    started = time.perf_counter()
    summary = run_compression(config, out, resume=(out / "compression.json").exists(), log=lambda m: log(" ", m))
    summary["benchmark_wall_seconds"] = round(time.perf_counter() - started, 1)
    summary["recorded_seconds"] = recorded_seconds(summary, out / "levels")
    summary["config"] = data
    summary["about_sample"] = about
    for plot in ("accuracy_vs_bpp", "accuracy_vs_level", "recovery", "two_stage"):
        source = out / "plots" / f"{plot}.png"
        if source.exists() and not quick:
            shutil.copy(source, RESULTS / f"compression_{name}_{plot}.png")
    return summary


# ---------------------------------------------------------------- report


def pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.2f}"


def ci(pair) -> str:
    return "n/a" if pair is None else f"[{100 * pair[0]:.2f}, {100 * pair[1]:.2f}]"


def points_ci(pair) -> str:
    return f"[{pair[0]:+.2f}, {pair[1]:+.2f}]"


def first_significant(levels: list[dict], codec: str, points: float = 0.0) -> dict | None:
    """The least compressed level of ``codec`` whose drop's interval lies above ``points``."""
    ordered = sorted((r for r in levels if r["codec"] == codec), key=lambda r: Level(codec, r["quality"]).fidelity_order())
    return next((r for r in ordered if r["drop_points_ci"][0] > points), None)


def knee_verdict(levels: list[dict], codec: str) -> str:
    """Where this curve's knee (first drop of more than 2 points, beyond noise) lies against the
    published one: at or past it (agrees), before it (degrades earlier), or nowhere (more robust)."""
    found = first_significant(levels, codec, 2.0)
    knee = Level(codec, PUBLISHED_KNEES[codec])
    tested = [r for r in levels if r["codec"] == codec]
    if found is None:
        worst = max(tested, key=lambda r: Level(codec, r["quality"]).fidelity_order())
        return (f"more robust: no drop beyond 2 points down to {Level(codec, worst['quality']).label} "
                f"({worst['drop_points']:+.1f})")
    level = Level(codec, found["quality"])
    if level.fidelity_order() >= knee.fidelity_order():
        return f"agrees: the first drop beyond 2 points is at {level.label}, at or past the knee"
    return f"degrades earlier: beyond 2 points already at {level.label}"


def dataset_section(name: str, summary: dict) -> str:
    reference = summary["reference"]
    config = summary["config"]
    splits = summary["dataset"]["splits"]
    lines = [f"## {name}", ""]
    if name == "mnist":
        lines.append("Data: the real MNIST test split from `../shared/data/mnist` (10,000 never-compressed 28x28 digits), "
                     f"pooled and carved into train/val/test (stratified, seed 0): {splits}; stored as PNG (lossless).")
    else:
        lines.append(f"Data: the real CIFAR-10 JPEG folder ({summary['about_sample']}), already JPEG q75, stored as PNG, "
                     f"so the reference is **q75 as shipped** and every level compresses it once more: {splits}.")
    lines += [
        "",
        f"Model: `{summary['model']['label']}` ({summary['model']['params']:,} parameters), trained from scratch for "
        f"{summary['epochs']} epochs (batch {config['final']['batch_size']}, lr {config['final']['lr']}, SGD + cosine) "
        f"{summary['repeats']} times per configuration (seeds {summary['seeds']}). Intervals: {summary['confidence']:.0%} "
        f"paired bootstrap ({summary['bootstrap']} resamples of the {reference['test_images']:,} test images and of the "
        "seeds); every level holds the same test images.",
        "",
        f"Reference ({reference['label']}): accuracy **{pct(reference['accuracy'])}%** {ci(reference['accuracy_ci'])}, "
        f"{reference['bpp']:.3f} payload bits per pixel ({reference['stored_bpp']:.3f} stored).",
        "",
        "### Degradation: the reference model on compressed test images",
        "",
        "| codec | level | payload bpp | stored bpp | PSNR dB | SSIM | accuracy % | 95% interval | drop (points) | drop interval |",
        "|---|---|---:|---:|---:|---:|---:|---|---:|---|",
    ]
    for r in summary["levels"]:
        lines.append(f"| {r['codec']} | {Level(r['codec'], r['quality']).label} | {r['bpp']:.3f} | {r['stored_bpp']:.2f} | "
                     f"{r['psnr']:.2f} | {r['ssim'] or float('nan'):.3f} | {pct(r['accuracy'])} | {ci(r['accuracy_ci'])} | "
                     f"{r['drop_points']:+.2f} | {points_ci(r['drop_points_ci'])} |")
    lines += ["", f"![accuracy against bits per pixel](results/compression_{name}_accuracy_vs_bpp.png)",
              f"![accuracy against each codec's scale](results/compression_{name}_accuracy_vs_level.png)", "",
              "### Recovery: retrained from scratch on compressed training images, tested at the same level", "",
              "| codec | level | reference model, reference data | reference model, compressed | retrained, compressed | "
              "retrained, reference data | recovered (points) | recovery | recovery interval |",
              "|---|---|---:|---:|---:|---:|---:|---:|---|"]
    for r in summary["recovery"]:
        share = "n/a (drop within noise)" if r["recovery"] is None else f"{100 * r['recovery']:.1f}%"
        lines.append(f"| {r['codec']} | {Level(r['codec'], r['quality']).label} | {pct(r['original_accuracy'])} | "
                     f"{pct(r['compressed_accuracy'])} | {pct(r['retrained_accuracy'])} "
                     f"{ci(r['retrained_accuracy_ci'])} | {pct(r['retrained_on_reference_accuracy'])} | "
                     f"{r['recovered_points']:+.2f} {points_ci(r['recovered_points_ci'])} | "
                     f"{share} | {ci(r['recovery_ci'])} |")
    lines += ["", f"![recovery](results/compression_{name}_recovery.png)", ""]
    if summary["two_stage"]:
        lines += ["### Two-stage NAS under compression", "",
                  f"Search: {config['search']['strategy']} ({config['search']['budget']} candidates x "
                  f"{config['search']['epochs_per_candidate']} epochs, selection {config['selection']['policy']}, "
                  f"subset {config['selection'].get('subset_size', 'all')}) over the space `{config['space']}`; the "
                  f"chosen architecture retrained for {summary['epochs']} epochs, {summary['repeats']} seeds per cell. "
                  "Search data and retraining data: reference or compressed; every cell tested on both.", "",
                  "| level | search data | retrain data | accuracy on reference % | on compressed % | search s | "
                  "search images | params | architecture |", "|---|---|---|---:|---:|---:|---:|---:|---|"]
        for c in summary["two_stage"]:
            lines.append(f"| {c['codec']} {Level(c['codec'], c['quality']).label} | {c['search_data']} | {c['retrain_data']} | "
                         f"{pct(c['accuracy_on_reference'])} {ci(c['accuracy_on_reference_ci'])} | "
                         f"{pct(c['accuracy_on_level'])} {ci(c['accuracy_on_level_ci'])} | {c['search_wall_seconds']:.0f} | "
                         f"{c['search_images_processed']:,} | {c['params']:,} | `{c['arch']}` |")
        for a in summary["two_stage_architectures"]:
            differing = a["differing_decisions"]
            differ = "; ".join(f"{k}: {v[0]} (reference) vs {v[1]} (compressed)" for k, v in differing.items())
            verdict = "the same" if a["same"] else f"{len(differing)} of {a['decisions']} decisions differ ({differ})"
            lines.append("")
            lines.append(f"Architectures searched on reference and on {a['codec']} {Level(a['codec'], a['quality']).label} "
                         f"data: {verdict}.")
        lines += ["", f"![two-stage NAS](results/compression_{name}_two_stage.png)", ""]
    lines += phase_times(summary)
    return "\n".join(lines)


TRAINED_IN = {"degradation": "reference-", "recovery": "retrain-", "two_stage_retrain": "two-stage-"}


def recorded_seconds(summary: dict, levels: Path) -> dict:
    """Per phase, the seconds its work recorded itself: each recoded level's card, each model's
    training, each search's wall time. Kept with every result, so complete even for a study that
    was stopped and resumed."""
    from frugalnas.data import open_dataset

    out = {"recode": round(sum(open_dataset(folder).card.get("recode_seconds", 0.0)
                               for folder in sorted(levels.iterdir()) if folder.is_dir()), 1)}
    out |= {phase: round(sum(v for k, v in summary["train_seconds"].items() if k.startswith(prefix)), 1)
           for phase, prefix in TRAINED_IN.items()}
    searches = {(cell["level"], cell["search_data"]): cell["search_wall_seconds"]  # two cells per search
                for cell in summary.get("two_stage") or []}
    out["two_stage_search"] = round(sum(searches.values()), 1)
    return out


def phase_times(summary: dict) -> list[str]:
    phases, recorded = summary["phases"], summary.get("recorded_seconds", {})  # results written before it existed
    lines = ["### Time per phase (seconds)", "",
             "| | " + " | ".join(phases) + " | total |", "|---|" + "---:|" * (len(phases) + 1),
             "| wall | " + " | ".join(f"{v:.0f}" for v in phases.values()) + f" | {sum(phases.values()):.0f} |"]
    if recorded:
        lines.append("| recorded by the models and searches | " +
                     " | ".join(f"{recorded[p]:.0f}" if p in recorded else "" for p in phases) +
                     f" | {sum(recorded.values()):.0f} |")
    lines.append("")
    note = ("`wall`: each phase's wall time, summed over every run into the study's folder. `recorded`: the seconds "
            "each recoded level, trained model and search recorded itself, summed per phase; a model's are its "
            "training only (scoring every model on every level's test images counts in `wall` alone). Two tasks "
            "run at a time, so `recorded` can exceed `wall`.")
    if any(phases.get(p, 0) < 1 < v for p, v in recorded.items()):
        note += (" This study was stopped and resumed before its folder kept the phases' wall times (they are "
                 "kept since), so the `wall` row lacks the stopped run's share: phases it had finished show 0. "
                 "The `recorded` row is complete.")
    return lines + [note, ""]


def comparison_section(summaries: dict) -> str:
    lines = ["## Against the published knees and CIFAR-10-C", ""]
    lines += ["Published (Poyser et al., ICPR 2020, five other tasks): performance falls significantly below JPEG "
              f"quality {PUBLISHED_KNEES['jpeg']} and at H.264 CRF {PUBLISHED_KNEES['h264']}; retraining recovers up to "
              "78.4% of the loss. Here, per data set, the least compressed level whose drop's interval lies above 0 "
              "points (a drop beyond noise), and above 2 and 5 points:", "",
              "| data | codec | first drop beyond noise | first > 2 points | first > 5 points | published knee | "
              "here, against it |", "|---|---|---|---|---|---|---|"]
    for name, summary in summaries.items():
        for codec in ("jpeg", "h264"):
            cells = []
            for points in (0.0, 2.0, 5.0):
                found = first_significant(summary["levels"], codec, points)
                cells.append("none" if found is None else
                             f"{Level(codec, found['quality']).label} ({found['drop_points']:+.1f})")
            knee = Level(codec, PUBLISHED_KNEES[codec]).label
            lines.append(f"| {name} | {codec} | {' | '.join(cells)} | {knee} | "
                         f"{knee_verdict(summary['levels'], codec)} |")
    lines += ["", "Recovery (published: up to 78.4%, five other tasks): "
              + "; ".join(f"{name} {r['codec']} {Level(r['codec'], r['quality']).label}: "
                          + ("n/a (drop within noise)" if r["recovery"] is None else
                             f"{100 * r['recovery']:.0f}% [{100 * r['recovery_ci'][0]:.0f}, {100 * r['recovery_ci'][1]:.0f}]")
                          for name, summary in summaries.items() for r in summary["recovery"]) + "."]
    if "cifar10" in summaries:
        summary = summaries["cifar10"]
        reference = summary["reference"]["accuracy"]
        by_quality = {r["quality"]: r for r in summary["levels"] if r["codec"] == "jpeg"}
        lines += ["", "CIFAR-10-C's JPEG corruption (severities 1-5 = quality 80, 65, 58, 50, 40) against this study's "
                  "CIFAR-10 JPEG levels at the same qualities. CIFAR-10-C compresses the original (lossless) images "
                  "once; here the images were already q75, so q80 re-encodes a q75 image (about a no-op) and the "
                  "lower qualities compress it a second time. Relative accuracy = accuracy / clean (reference) accuracy.",
                  "", "| JPEG quality | WRN-28-10 on CIFAR-10-C % | relative | baseline:cnn here % | relative |",
                  "|---:|---:|---:|---:|---:|",
                  f"| clean / reference | {CIFAR10C_WRN['clean']:.2f} | 1.000 | {pct(reference)} | 1.000 |"]
        for quality in CIFAR10C_JPEG_QUALITIES:
            ours = by_quality.get(quality)
            lines.append(f"| {quality} | {CIFAR10C_WRN[quality]:.1f} | {CIFAR10C_WRN[quality] / CIFAR10C_WRN['clean']:.3f} | "
                         + (f"{pct(ours['accuracy'])} | {ours['accuracy'] / reference:.3f} |" if ours else "- | - |"))
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", choices=["mnist", "cifar10", "all"], default="all")
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny settings, results not written")
    parser.add_argument("--report-only", action="store_true",
                        help="rewrite results/compression.md from results/compression.json, running nothing")
    args = parser.parse_args()
    if args.report_only:
        payload = json.loads((RESULTS / "compression.json").read_text())
        write_results("compression", payload, report(payload["studies"], payload["header"]))
        return
    import torch

    torch.set_num_threads(1)
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    work = Path(os.environ.get("FRUGALNAS_BENCH_WORK", "/tmp/frugalnas-bench"))
    work.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    names = ["mnist", "cifar10"] if args.dataset == "all" else [args.dataset]
    previous = {}
    if not args.quick and (RESULTS / "compression.json").exists():
        previous = json.loads((RESULTS / "compression.json").read_text()).get("studies", {})
    summaries = {name: run_study(name, args.quick, work) for name in names}
    if args.quick:
        log("quick run: results not written")
        return
    summaries = {**{k: v for k, v in previous.items() if k not in summaries}, **summaries}
    info = machine()
    header = (f"Generated by `benchmarks/compression.py` "
              f"({date.today()}; {info.get('cpu', '?')}, {info['cpu_count']} cores shared with other jobs: load average "
              f"{load_before:.1f} before, {os.getloadavg()[0]:.1f} after; commit {info.get('commit')}; this run "
              f"{(time.perf_counter() - started) / 60:.0f} min for {', '.join(names)}). Each data set is one "
              "`run_compression` (= `frugalnas compression`); the models train as Ray tasks, two at a time, one torch "
              "thread each. Codec versions: "
              + "; ".join(f"{codec}: " + ", ".join(f"{k} {v}" for k, v in versions.items())
                          for codec, versions in next(iter(summaries.values()))["codec_versions"].items())
              + ".\n")
    payload = {"machine": info, "header": header,
               "studies": {name: {k: v for k, v in s.items() if k not in ("train_seconds",)}
                           for name, s in summaries.items()}}
    write_results("compression", payload, report(payload["studies"], header))


def report(summaries: dict, header: str) -> str:
    return "\n".join(["# Compression study: degradation, recovery, two-stage NAS\n", header]
                     + [dataset_section(name, summaries[name]) for name in ("mnist", "cifar10") if name in summaries]
                     + [comparison_section(summaries)])


if __name__ == "__main__":
    main()
