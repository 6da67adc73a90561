"""The plots of a ranking-fidelity measurement (``frugalnas fidelity``), from its summary alone.

* :func:`fidelity_curves`: Kendall tau against training images per architecture, one line per arm
  (its 95% bootstrap interval as a band), one panel per proxy score, the free baselines as
  horizontal lines: where a line crosses a baseline, training starts to pay for itself.
* :func:`proxy_vs_truth`: each architecture's proxy score against its ground truth, one panel per
  arm and budget, to see *which* architectures a cheap evaluation misranks.
"""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

SCORE_TITLES = {"accuracy": "validation accuracy at the budget", "tse": "training speed (minus mean training loss)",
                "tse_last_quarter": "training speed, last quarter of the budget",
                "accuracy_gain": "accuracy gained since the first budget"}
PANELS_PER_ROW = 4  # more side by side are too narrow to read
BASELINE_STYLES = {"params": ("black", "--"), "flops": ("dimgray", ":"), "synflow": ("tab:brown", "-."),
                   "naswot": ("tab:olive", (0, (3, 1, 1, 1, 1, 1)))}


def score_title(score: str) -> str:
    measured, *priors = score.split("+")
    title = SCORE_TITLES.get(measured, measured)
    return f"{title}, ranked with {' and '.join(priors)}" if priors else title


def _values(sequence):
    return np.array([np.nan if v is None else v for v in sequence], dtype=float)


def fidelity_curves(summary: dict, title: str = ""):
    budgets = np.array(summary["budgets"], dtype=float)
    scores = summary["scores"]
    columns = min(len(scores), PANELS_PER_ROW)
    rows = -(-len(scores) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(5.2 * columns, 4.2 * rows), sharey=True, squeeze=False)
    for axis in axes.flat[len(scores):]:
        axis.set_visible(False)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for axis, score in zip(axes.flat, scores):
        for index, (arm, entry) in enumerate(summary["arms"].items()):
            stats = entry["by_score"][score]
            tau = _values(stats["kendall_tau"])
            colour = colours[index % len(colours)]
            axis.plot(budgets, tau, marker="o", color=colour, label=arm)
            bands = [(np.nan, np.nan) if ci is None else ci for ci in stats["tau_ci"]]
            low, high = np.array(bands, dtype=float).T
            axis.fill_between(budgets, low, high, color=colour, alpha=0.12, linewidth=0)
        for name, baseline in summary["baselines"].items():
            if baseline["kendall_tau"] is None:
                continue
            colour, style = BASELINE_STYLES.get(name, ("gray", "--"))
            axis.axhline(baseline["kendall_tau"], color=colour, linestyle=style, linewidth=1.2,
                         label=f"{name} (free): {baseline['kendall_tau']:.2f}")
        axis.axhline(0, color="lightgray", linewidth=0.8)
        axis.set_xscale("log")
        axis.set_xticks(budgets)
        axis.set_xticklabels([f"{b / 1000:g}k" if b >= 1000 else str(int(b)) for b in budgets])
        axis.set_xticks([], minor=True)  # the log axis's own minor labels (3x10^3, ...) crowd the budgets
        axis.set_xlabel("training images per architecture")
        axis.set_title(score_title(score), fontsize=10)
        axis.grid(alpha=0.3)
    for row in axes:
        row[0].set_ylabel("Kendall tau against ground truth")
    axes.flat[len(scores) - 1].legend(fontsize=7, loc="lower right")
    n = len(summary["architectures"])
    figure.suptitle(title or f"Ranking fidelity of {n} architectures (bands: 95% bootstrap intervals)", fontsize=11)
    figure.tight_layout()
    return figure


def proxy_vs_truth(summary: dict, score: str | None = None, title: str = ""):
    score = score or summary["primary_score"]
    arms = list(summary["arms"])
    budgets = summary["budgets"]
    truth = np.array([a["truth"] for a in summary["architectures"]])
    figure, axes = plt.subplots(len(arms), len(budgets), figsize=(2.4 * len(budgets), 2.2 * len(arms)),
                                squeeze=False, sharex=True)
    for row, arm in enumerate(arms):
        for col, budget in enumerate(budgets):
            axis = axes[row][col]
            proxy = _values([a["scores_by"][score][arm][col] for a in summary["architectures"]])
            tau = summary["arms"][arm]["by_score"][score]["kendall_tau"][col]
            if np.isfinite(proxy).any():
                axis.scatter(truth, proxy, s=10, color="tab:blue")
                axis.set_title(f"{arm}, {budget:,}: tau {'-' if tau is None else f'{tau:.2f}'}", fontsize=8)
            else:
                axis.set_title(f"{arm}, {budget:,}: not run", fontsize=8)
            axis.tick_params(labelsize=6)
            if row == len(arms) - 1:
                axis.set_xlabel("ground truth", fontsize=7)
            if col == 0:
                axis.set_ylabel(score, fontsize=7)
    figure.suptitle(title or f"{score_title(score)} against ground truth, per arm and budget", fontsize=10)
    figure.tight_layout()
    return figure
