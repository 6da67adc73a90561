"""Why does DDS rank the way it does? What it swaps in, and which architectures each arm misranks.

    .venv/bin/python benchmarks/fidelity_dds_analysis.py          # after benchmarks/fidelity_nb201.py

Reads the fidelity benchmark's summary (``benchmarks/results/fidelity_nb201.json``) and its work
folder (the ingested CIFAR-10, the autoencoder's latents, the entropy reference model's scores),
then:

1. **Misranking**, from the summary alone: at the largest budget every arm reached, each
   architecture's rank under each arm's score against its ground-truth rank, and how strongly each
   arm's score follows parameter count (Kendall tau of score against params): short training
   favours small networks that learn fast, which reverses the final order.
2. **What the dynamic arms swap in**: three of the benchmark's architectures (lowest, median and
   highest ground truth) are trained again with ``dds``, ``dds-coverage`` and ``dynamic-random``,
   exactly as in the benchmark (same settings, seeds and budget), recording every swap. For the
   images swapped in (and those they replaced) it reports how typical they are of their class (the
   percentile of their latent distance to the class centroid: 50 = typical, 100 = the class's most
   extreme image) and how uncertain the entropy reference model is about them (percentile of its
   prediction entropy over the training set).

Writes ``benchmarks/results/fidelity_dds_analysis.{json,md}``.
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np
from scipy import stats

from common import RESULTS, machine

ARMS = ("dds", "dds-coverage", "dynamic-random")  # default --arms


def arm_settings(summary: dict, arms: list[str]) -> dict[str, dict]:
    """Settings of each ``NAME`` or ``NAME=POLICY`` in ``arms``: the benchmark's own for an arm it ran; for
    ``NAME=POLICY`` not in it, the first listed benchmark arm's settings with ``policy`` replaced (the same
    thresholds and subset, another replacement rule)."""
    parsed = [(a.split("=", 1) + [None])[:2] for a in arms]
    known = summary["arm_settings"]
    base = next((known[name] for name, _ in parsed if name in known), None)
    out = {}
    for name, policy in parsed:
        if name in known:
            out[name] = dict(known[name])
        elif policy and base is not None:
            out[name] = {**base, "policy": policy}
        else:
            raise SystemExit(f"arm {name!r} is not in the benchmark ({', '.join(known)}): name one of them, or "
                             f"{name}=POLICY to re-run a listed arm's settings with another policy")
    return out


def misranking(summary: dict) -> dict:
    budgets = summary["budgets"]
    arms = summary["arms"]
    reached = [b for b in range(len(budgets)) if all(a["kendall_tau"][b] is not None for a in arms.values())]
    b = reached[-1]
    archs = summary["architectures"]
    truth = np.array([a["truth"] for a in archs])
    params = np.array([a["params"] for a in archs])
    truth_rank = stats.rankdata(-truth)
    out = {"budget": budgets[b], "architectures": len(archs), "arms": {}}
    for arm in arms:
        score = np.array([a["scores"][arm][b] for a in archs])
        rank = stats.rankdata(-score)
        displaced = sorted(range(len(archs)), key=lambda i: -abs(rank[i] - truth_rank[i]))[:3]
        out["arms"][arm] = {
            "kendall_tau": arms[arm]["kendall_tau"][b],
            "tau_with_params": float(stats.kendalltau(score, params).statistic),
            "mean_rank_displacement": float(np.mean(np.abs(rank - truth_rank))),
            "most_misranked": [{"arch": archs[i]["arch"], "truth": archs[i]["truth"], "params": archs[i]["params"],
                                "truth_rank": float(truth_rank[i]), "rank": float(rank[i])} for i in displaced]}
    out["tau_params_truth"] = summary["baselines"]["params"]["kendall_tau"]
    return out


def percentile_within(values: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Each value's percentile (0..100) within its group."""
    out = np.empty(len(values))
    for g in np.unique(groups):
        where = groups == g
        out[where] = 100 * (stats.rankdata(values[where]) - 0.5) / where.sum()
    return out


def swaps(summary: dict, work: Path, n_archs: int, arms: dict[str, dict]) -> dict:
    import torch

    from frugalnas.data import open_dataset
    from frugalnas.data.torch_dataset import ImageSplit
    from frugalnas.embed import load_latents
    from frugalnas.fidelity.proxy import ProxyRun
    from frugalnas.selection.entropy import load_entropy_scores
    from frugalnas.spaces import load_space

    torch.set_num_threads(1)
    dataset = open_dataset(summary["dataset"]["path"])
    train, val = ImageSplit(dataset, "train"), ImageSplit(dataset, "val")
    latent_ids, vectors = load_latents(summary["one_off"]["embedding"]["path"])
    row = {int(i): r for r, i in enumerate(latent_ids)}
    train_rows = np.array([row[int(i)] for i in train.ids])
    train_vectors = vectors[train_rows]
    centroid_distance = np.empty(len(train.ids))
    for c in np.unique(train.labels):
        where = train.labels == c
        centroid_distance[where] = np.linalg.norm(train_vectors[where] - train_vectors[where].mean(0), axis=1)
    typicality = dict(zip(train.ids.tolist(), percentile_within(centroid_distance, train.labels)))
    entropy_pct = {}  # without an entropy arm the benchmark has no reference model's scores
    if (summary.get("one_off") or {}).get("entropy_reference"):
        entropy_ids, entropy = load_entropy_scores(summary["one_off"]["entropy_reference"]["path"])
        entropy_pct = dict(zip(entropy_ids.tolist(), 100 * (stats.rankdata(entropy) - 0.5) / len(entropy)))
    space = load_space(summary["space_settings"])
    archs = summary["architectures"]
    order = sorted(range(len(archs)), key=lambda i: archs[i]["truth"])
    chosen = [order[0], order[len(order) // 2], order[-1]][:n_archs]
    budget = max(b for b in summary["budgets"]
                 if all(summary["arms"][arm]["kendall_tau"][summary["budgets"].index(b)] is not None
                        for arm in arms if arm in summary["arms"]))
    result = {"budget": budget, "architectures": [archs[i]["arch"] for i in chosen], "arms": {}}
    for arm, settings in arms.items():
        inputs = {"latents": (latent_ids, vectors)}
        swapped_in, swapped_out, updates, per_arch = [], [], 0, []
        for i in chosen:
            run = ProxyRun(space=space, arch=space.parse(archs[i]["arch"]), train_data=train, eval_data=val,
                           num_classes=len(dataset.classes), channels=dataset.channels, settings=settings,
                           train=summary["train"], seed=summary["seeds"][0], checkpoints=True,
                           # every checkpoint the benchmark scored (scoring between budgets is part of the run)
                           budgets=[b for b in summary["budgets"] if b <= budget],
                           schedule_images=summary["budgets"][-1], selector_inputs=inputs)
            trainer = None
            records = [record for record, _ in run.run()]
            per_arch.append({"arch": archs[i]["arch"], "truth": archs[i]["truth"], **records[-1]})
            trainer = run.last_trainer
            for h in trainer.selector.history:
                if h.get("updated") and h.get("swaps"):
                    updates += 1
                    for old, new in h["swaps"]:
                        swapped_out.append(old)
                        swapped_in.append(new)
            print(f"{arm} {archs[i]['arch']}: {per_arch[-1]}", flush=True)
        describe = lambda ids, table: None if not ids or not table else {  # noqa: E731
            "median": float(np.median([table[i] for i in ids])),
            "share_above_90": float(np.mean([table[i] > 90 for i in ids]))}
        result["arms"][arm] = {
            "updates": updates, "swapped": len(swapped_in), "runs": per_arch,
            "typicality_in": describe(swapped_in, typicality), "typicality_out": describe(swapped_out, typicality),
            "entropy_in": describe(swapped_in, entropy_pct), "entropy_out": describe(swapped_out, entropy_pct)}
    return result


def markdown(report: dict) -> str:
    rank = report["misranking"]
    count = f" ({rank['architectures']} architectures)" if "architectures" in rank else ""
    lines = ["# Why DDS ranks as it does (benchmarks/fidelity_dds_analysis.py)", "",
             f"Generated at commit {report['machine'].get('commit', '?')} from the fidelity benchmark's summary of that "
             f"commit{count}, and re-runs of its trials; the fidelity section above may be from a later run (compare "
             "its commit).", "",
             f"## Misranking at {rank['budget']:,} images per architecture (validation accuracy)", "",
             f"Parameter count alone: Kendall tau {rank['tau_params_truth']:+.2f} against ground truth.", "",
             "| arm | tau vs truth | tau vs params | mean rank displacement | most misranked (truth rank -> rank, params) |",
             "|---|---:|---:|---:|---|"]
    for arm, entry in rank["arms"].items():
        worst = "; ".join(f"{int(m['truth_rank'])} -> {int(m['rank'])} ({m['params']:,.0f})"
                          for m in entry["most_misranked"])
        tau = "-" if entry["kendall_tau"] is None else f"{entry['kendall_tau']:+.2f}"
        lines.append(f"| {arm} | {tau} | {entry['tau_with_params']:+.2f} | "
                     f"{entry['mean_rank_displacement']:.1f} | {worst} |")
    swap = report.get("swaps")
    if swap:
        lines += ["", f"## What the dynamic arms swap in ({len(swap['architectures'])} architecture(s), "
                  f"{swap['budget']:,} images each)", "",
                  "Typicality: percentile of an image's latent distance to its class centroid (50 typical, 100 "
                  "the class's most extreme image). Entropy: percentile of the entropy reference model's "
                  "prediction entropy over the training set (100 = most uncertain).", "",
                  "| arm | updates | images swapped | typicality in (median, share > 90) | typicality out | "
                  "entropy in (median, share > 90) | entropy out |", "|---|---:|---:|---|---|---|---|"]
        fmt = lambda d: "-" if d is None else f"{d['median']:.0f}, {100 * d['share_above_90']:.0f}%"  # noqa: E731
        for arm, e in swap["arms"].items():
            lines.append(f"| {arm} | {e['updates']} | {e['swapped']} | {fmt(e['typicality_in'])} | "
                         f"{fmt(e['typicality_out'])} | {fmt(e['entropy_in'])} | {fmt(e['entropy_out'])} |")
        lines += ["", "Validation accuracy of each re-run (the same architectures, arms and budget):", "",
                  "| arm | " + " | ".join(f"truth {r['truth']:.1f}" for r in next(iter(swap["arms"].values()))["runs"])
                  + " |", "|---|" + "---:|" * len(next(iter(swap["arms"].values()))["runs"])]
        for arm, e in swap["arms"].items():
            lines.append(f"| {arm} | " + " | ".join(f"{r['accuracy']:.3f}" for r in e["runs"]) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--summary", default=str(RESULTS / "fidelity_nb201.json"))
    parser.add_argument("--work", default=os.environ.get("FRUGALNAS_BENCH_WORK", "/tmp/frugalnas-bench"))
    parser.add_argument("--archs", type=int, default=3, help="architectures re-run to record swaps (0: skip)")
    parser.add_argument("--arms", default=",".join(ARMS),
                        help="arms re-run to record swaps: NAME (an arm of the benchmark) or NAME=POLICY (the first "
                             "listed arm's settings with another policy), comma-separated")
    args = parser.parse_args()
    summary = json.loads(Path(args.summary).read_text())
    report = {"misranking": misranking(summary), "machine": machine()}
    if args.archs:
        report["swaps"] = swaps(summary, Path(args.work), args.archs, arm_settings(summary, args.arms.split(",")))
    (RESULTS / "fidelity_dds_analysis.json").write_text(json.dumps(report, indent=2) + "\n")
    text = markdown(report)
    (RESULTS / "fidelity_dds_analysis.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
