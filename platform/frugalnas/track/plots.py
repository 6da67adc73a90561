"""The plots an experiment logs: the search curve, accuracy against size with the Pareto front, and
a selector's history. Each takes plain data and returns a matplotlib Figure (Agg, no screen)."""
from __future__ import annotations

from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402


#: How a score metric is labelled on an axis.
METRIC_LABELS = {"accuracy": "validation accuracy", "map50_95": "validation mAP50-95"}


def search_curve(accuracies: Sequence[float | None], images: Sequence[int], title: str, metric: str = "accuracy"):
    """Each candidate's score in evaluation order, the best so far, and the images spent."""
    figure, axis = plt.subplots(figsize=(7, 4))
    x = np.arange(1, len(accuracies) + 1)
    values = np.array([np.nan if a is None else a for a in accuracies], dtype=float)
    axis.scatter(x, values, s=14, color="tab:blue", alpha=0.6, label="candidate")
    best = np.fmax.accumulate(np.where(np.isnan(values), -np.inf, values))
    axis.step(x, np.where(np.isinf(best), np.nan, best), where="post", color="tab:blue", label="best so far")
    axis.set_xlabel("candidates evaluated")
    axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    axis.set_ylabel(METRIC_LABELS.get(metric, metric))
    axis.set_title(title)
    spent = axis.twinx()
    spent.plot(x, np.cumsum(images), color="tab:orange", linestyle="--", label="images processed (cumulative)")
    spent.set_ylabel("images processed", color="tab:orange")
    lines = axis.get_legend_handles_labels()
    extra = spent.get_legend_handles_labels()
    axis.legend(lines[0] + extra[0], lines[1] + extra[1], loc="lower right", fontsize=8)
    figure.tight_layout()
    return figure


def pareto_plot(points: Sequence[dict], front: Sequence[dict], title: str, x_key: str = "params",
                metric: str = "accuracy"):
    """The score against ``x_key`` for every candidate, the non-dominated ones joined up."""
    figure, axis = plt.subplots(figsize=(7, 4))
    shown = [p for p in points if p.get(metric) is not None and p.get(x_key) is not None]
    axis.scatter([p[x_key] for p in shown], [p[metric] for p in shown], s=16, alpha=0.5, label="candidates")
    front = sorted((p for p in front if p.get(x_key) is not None and p.get(metric) is not None), key=lambda p: p[x_key])
    if front:
        axis.plot([p[x_key] for p in front], [p[metric] for p in front], "o-", color="tab:red",
                  label="Pareto front")
    axis.set_xscale("log" if shown and max(p[x_key] for p in shown) > 20 * max(1, min(p[x_key] for p in shown))
                    else "linear")
    axis.set_xlabel(x_key)
    axis.set_ylabel(METRIC_LABELS.get(metric, metric))
    axis.set_title(title)
    axis.legend(fontsize=8)
    figure.tight_layout()
    return figure


def selector_history_plot(history: Sequence[dict], title: str):
    """Which images were in the subset when (rows: images in order of joining; columns: epochs),
    and, for hardness-based selectors, the hardness histogram of the subset at every epoch."""
    subsets = [(r["epoch"], r.get("subset")) for r in history if r.get("subset") is not None]
    histograms = [(r["epoch"], r["hardness_histogram"]) for r in history if r.get("hardness_histogram")]
    panels = 1 + bool(histograms)
    figure, axes = plt.subplots(1, panels, figsize=(6 * panels, 4), squeeze=False)
    axis = axes[0][0]
    if subsets:
        order: dict[int, int] = {}
        for _, ids in subsets:
            for i in ids:
                order.setdefault(int(i), len(order))
        grid = np.zeros((len(order), max(e for e, _ in subsets) + 1), dtype=np.uint8)
        for epoch, ids in subsets:
            grid[[order[int(i)] for i in ids], epoch] = 1
        axis.imshow(grid, aspect="auto", interpolation="nearest", cmap="Blues", vmin=0, vmax=1,
                    extent=(0.5, grid.shape[1] + 0.5, len(order) - 0.5, -0.5))
        axis.set_ylabel(f"training images ever in the subset ({len(order)}), by first epoch")
        for record in history:
            if record.get("updated"):
                axis.axvline(record["epoch"] + 1, color="tab:red", linewidth=0.8)
    else:
        axis.text(0.5, 0.5, "every training image, every epoch", ha="center", va="center")
    axis.set_xlabel("epoch (red: subset update)")
    axis.set_title("subset membership")
    if histograms:
        axis = axes[0][1]
        epochs = [e for e, _ in histograms]
        counts = np.array([h for _, h in histograms], dtype=float).T
        bins = counts.shape[0]
        image = axis.imshow(counts, aspect="auto", origin="lower", cmap="viridis",
                            extent=(min(epochs) + 0.5, max(epochs) + 1.5, 0, 1))
        figure.colorbar(image, ax=axis, label="images")
        axis.set_xlabel("epoch")
        axis.set_ylabel(f"hardness ({bins} bins; high = easy)")
        axis.set_title("hardness of the subset's images")
    for row in axes[0]:
        row.xaxis.set_major_locator(MaxNLocator(integer=True))
    figure.suptitle(title)
    figure.tight_layout()
    return figure
