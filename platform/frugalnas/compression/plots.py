"""The compression study's plots. Each takes the study's records (as in ``summary.json``) and returns
a matplotlib Figure (Agg, no screen)."""
from __future__ import annotations

from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from frugalnas.compression.levels import CIFAR10C_JPEG_QUALITIES, PUBLISHED_KNEES, Level  # noqa: E402


def _by_codec(levels: Sequence[dict]) -> dict[str, list[dict]]:
    groups: dict[str, list[dict]] = {}
    for record in levels:
        groups.setdefault(record["codec"], []).append(record)
    return groups


def _reference_line(axis, reference: dict, label: str, horizontal: bool = True) -> None:
    low, high = reference["accuracy_ci"]
    axis.axhspan(low, high, color="grey", alpha=0.15)
    axis.axhline(reference["accuracy"], color="black", linestyle="--", linewidth=1, label=label)


def _label(record: dict) -> str:
    return Level(record["codec"], record["quality"]).label


def accuracy_vs_bpp(levels: Sequence[dict], reference: dict, title: str, metric: str = "accuracy"):
    """Accuracy against payload bits per pixel, one line per codec with its interval band, each point
    labelled with its level; the reference model on reference data as a dashed line."""
    figure, axis = plt.subplots(figsize=(8, 5))
    for codec, records in _by_codec(levels).items():
        records = sorted(records, key=lambda r: r["bpp"])
        bpp = [r["bpp"] for r in records]
        line, = axis.plot(bpp, [r["accuracy"] for r in records], "o-", label=codec)
        axis.fill_between(bpp, [r["accuracy_ci"][0] for r in records], [r["accuracy_ci"][1] for r in records],
                          color=line.get_color(), alpha=0.2)
        for record in records:
            axis.annotate(_label(record), (record["bpp"], record["accuracy"]), textcoords="offset points",
                          xytext=(3, -10), fontsize=7, color=line.get_color())
    _reference_line(axis, reference, f"reference ({reference['label']}, {reference['bpp']:.2f} bpp)")
    if levels and max(r["bpp"] for r in levels) > 8 * max(1e-3, min(r["bpp"] for r in levels)):
        axis.set_xscale("log")
    axis.set_xlabel("payload bits per pixel (headers excluded)")
    axis.set_ylabel(f"test {metric} of the reference model")
    axis.set_title(title)
    axis.legend(fontsize=8, loc="lower right")
    figure.tight_layout()
    return figure


def accuracy_vs_level(levels: Sequence[dict], reference: dict, title: str, metric: str = "accuracy"):
    """Accuracy against each codec's own scale (quality, CRF), least compressed on the left, with
    the published knees (JPEG q15, H.264 CRF 40) and CIFAR-10-C's JPEG qualities marked."""
    groups = _by_codec(levels)
    figure, axes = plt.subplots(1, len(groups), figsize=(5.5 * len(groups), 4.5), squeeze=False)
    for axis, (codec, records) in zip(axes[0], groups.items()):
        level = Level(codec, records[0]["quality"])
        records = sorted(records, key=lambda r: r["quality"])
        x = [r["quality"] for r in records]
        line, = axis.plot(x, [r["accuracy"] for r in records], "o-", label=codec)
        axis.fill_between(x, [r["accuracy_ci"][0] for r in records], [r["accuracy_ci"][1] for r in records],
                          color=line.get_color(), alpha=0.2)
        _reference_line(axis, reference, f"reference ({reference['label']})")
        if codec in PUBLISHED_KNEES:
            axis.axvline(PUBLISHED_KNEES[codec], color="tab:red", linestyle=":",
                         label=f"published knee ({level.scale} {PUBLISHED_KNEES[codec]})")
        if codec == "jpeg":
            for i, quality in enumerate(CIFAR10C_JPEG_QUALITIES):
                axis.axvline(quality, color="tab:purple", alpha=0.3, linewidth=0.8,
                             label="CIFAR-10-C JPEG severities 1-5" if i == 0 else None)
        if not level.lower_is_better:
            axis.invert_xaxis()  # least compressed on the left for every codec
        axis.set_xlabel(f"{codec} {level.scale}" + (" (lower is better)" if level.lower_is_better else ""))
        axis.set_ylabel(f"test {metric}")
        axis.set_title(f"{title}: {codec}")
        axis.legend(fontsize=7, loc="lower left")
    figure.tight_layout()
    return figure


def recovery_bars(recovery: Sequence[dict], title: str, metric: str = "accuracy"):
    """Per retrained level: the reference model on reference and on compressed test data, the
    retrained model on compressed and on reference data, with intervals; recovery written above."""
    figure, axis = plt.subplots(figsize=(max(6, 2.6 * len(recovery)), 5))
    bars = [("original_accuracy", "reference model, reference data"),
            ("compressed_accuracy", "reference model, compressed data"),
            ("retrained_accuracy", "retrained, compressed data"),
            ("retrained_on_reference_accuracy", "retrained, reference data")]
    width = 0.8 / len(bars)
    for i, (key, label) in enumerate(bars):
        x = np.arange(len(recovery)) + (i - (len(bars) - 1) / 2) * width
        values = [r[key] for r in recovery]
        errors = np.array([[r[key] - r[f"{key}_ci"][0], r[f"{key}_ci"][1] - r[key]] for r in recovery]).T
        axis.bar(x, values, width, yerr=errors, capsize=3, label=label)
    for i, record in enumerate(recovery):
        text = ("n/a (drop within noise)" if record["recovery"] is None else
                f"recovery {100 * record['recovery']:.0f}%\n[{100 * record['recovery_ci'][0]:.0f}, "
                f"{100 * record['recovery_ci'][1]:.0f}]")
        top = max(record[key] for key, _ in bars)
        axis.text(i, top + 0.02, text, ha="center", va="bottom", fontsize=8)
    axis.set_xticks(np.arange(len(recovery)), [f"{r['codec']} {_label(r)}" for r in recovery])
    low = min(min(r[key + "_ci"][0] for key, _ in bars) for r in recovery) if recovery else 0
    axis.set_ylim(max(0.0, low - 0.1), 1.12)
    axis.set_ylabel(f"test {metric}")
    axis.set_title(title)
    axis.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.08), ncol=2)
    figure.tight_layout()
    return figure


def psnr_vs_bpp(levels: Sequence[dict], title: str):
    """PSNR of the test images against payload bits per pixel, one line per codec."""
    figure, axis = plt.subplots(figsize=(7, 4.5))
    for codec, records in _by_codec(levels).items():
        records = sorted(records, key=lambda r: r["bpp"])
        line, = axis.plot([r["bpp"] for r in records], [r["psnr"] for r in records], "o-", label=codec)
        for record in records:
            axis.annotate(_label(record), (record["bpp"], record["psnr"]), textcoords="offset points", xytext=(3, 3),
                          fontsize=7, color=line.get_color())
    if levels and max(r["bpp"] for r in levels) > 8 * max(1e-3, min(r["bpp"] for r in levels)):
        axis.set_xscale("log")
    axis.set_xlabel("payload bits per pixel (headers excluded)")
    axis.set_ylabel("PSNR against the reference images (dB)")
    axis.set_title(title)
    axis.legend(fontsize=8)
    figure.tight_layout()
    return figure


def example_grid(reference: tuple[str, np.ndarray], examples: dict[str, list[tuple[str, np.ndarray, float]]],
                 title: str):
    """One test image at every level: a row per codec (least compressed first), the reference first.
    ``examples``: codec -> [(label, (H, W, C) uint8 image, PSNR)]."""
    columns = 1 + max((len(row) for row in examples.values()), default=0)
    rows = max(1, len(examples))
    figure, axes = plt.subplots(rows, columns, figsize=(1.4 * columns, 2.0 * rows + 0.4), squeeze=False)
    for axis in axes.flat:
        axis.axis("off")

    def show(axis, image, label):
        axis.imshow(image[:, :, 0] if image.shape[2] == 1 else image, cmap="gray" if image.shape[2] == 1 else None,
                    vmin=0, vmax=255, interpolation="nearest")
        axis.set_title(label, fontsize=7)

    for row, (codec, images) in enumerate(examples.items()):
        show(axes[row][0], reference[1], reference[0])
        for column, (label, image, psnr_db) in enumerate(images, start=1):
            show(axes[row][column], image, f"{codec} {label}\n{psnr_db:.1f} dB")
    figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    return figure


def two_stage_plot(cells: Sequence[dict], title: str, metric: str = "accuracy"):
    """Two-stage NAS under compression: per level, the 2x2 of search data x retraining data, each
    cell's accuracy on reference and on compressed test data."""
    levels = list(dict.fromkeys((c["codec"], c["quality"]) for c in cells))
    figure, axes = plt.subplots(1, len(levels), figsize=(6 * len(levels), 4.5), squeeze=False)
    for axis, (codec, quality) in zip(axes[0], levels):
        group = [c for c in cells if (c["codec"], c["quality"]) == (codec, quality)]
        names = [f"search {c['search_data']}\nretrain {c['retrain_data']}" for c in group]
        x = np.arange(len(group))
        for offset, key, label in ((-0.2, "accuracy_on_reference", "tested on reference"),
                                   (0.2, "accuracy_on_level", "tested on compressed")):
            values = [c[key] for c in group]
            errors = np.array([[c[key] - c[f"{key}_ci"][0], c[f"{key}_ci"][1] - c[key]] for c in group]).T
            axis.bar(x + offset, values, 0.4, yerr=errors, capsize=3, label=label)
        axis.set_xticks(x, names, fontsize=7)
        low = min(min(c["accuracy_on_reference_ci"][0], c["accuracy_on_level_ci"][0]) for c in group)
        axis.set_ylim(max(0.0, low - 0.1), 1.0)
        axis.set_ylabel(f"test {metric}")
        axis.set_title(f"{title}: {codec} {Level(codec, quality).label}")
        axis.legend(fontsize=7, loc="lower left")
    figure.tight_layout()
    return figure
