"""The ground truth a cheap evaluation is judged against, and the architectures to judge it on.

The table is any tabular benchmark the strategies' benchmark reader takes (one row per
architecture: its canonical string and the metric, e.g. NAS-Bench-201's 200-epoch CIFAR-10 test
accuracy). The architectures are either listed, or drawn as a seeded sample stratified by ground
truth: the range is cut into equal-width bins and the sample spread over them as evenly as their
contents allow, so a sample of 20 covers the good and the mediocre alike instead of piling up where
most architectures are.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from frugalnas.errors import DataError
from frugalnas.spaces.base import Arch, Space


@dataclass
class GroundTruth:
    """Architecture -> ground-truth metric, read from ``source``."""

    values: dict[Arch, float]
    metric: str
    source: str

    def __call__(self, arch: Arch) -> float:
        try:
            return self.values[arch]
        except KeyError:
            raise DataError(f"{self.source} has no row for architecture {arch} (column {self.metric!r})") from None

    def __len__(self) -> int:
        return len(self.values)

    @property
    def optimum(self) -> float:
        return max(self.values.values())


def load_ground_truth(path: str | Path, space: Space, *, arch_column: str, metric_column: str) -> GroundTruth:
    """Read the table (errors name the file and the culprit: a missing column, a row whose
    architecture the space cannot parse, a value that is not a number, a duplicate)."""
    from frugalnas.strategies.benchmark import read_table

    lookup = read_table(path, space, arch_column=arch_column, metric_column=metric_column)
    return GroundTruth({arch: row[metric_column] for arch, row in lookup.values.items()}, metric_column,
                       str(path))


def parse_architectures(texts: Sequence[str], space: Space, truth: GroundTruth) -> list[Arch]:
    """The listed architectures, each parsed and present in the table (else a DataError naming it)."""
    archs, seen = [], set()
    for position, text in enumerate(texts):
        try:
            arch = space.parse(str(text))
        except ValueError as error:
            raise DataError(f"fidelity.architectures[{position}] {text!r}: {error}") from None
        if arch in seen:
            raise DataError(f"fidelity.architectures[{position}] {text!r} is listed twice")
        truth(arch)  # a missing row is an error naming it
        seen.add(arch)
        archs.append(arch)
    if len(archs) < 2:
        raise DataError(f"fidelity.architectures: rank statistics need at least 2 architectures, got {len(archs)}")
    return archs


def stratified_sample(truth: GroundTruth, k: int, *, low: float | None = None, high: float | None = None,
                      bins: int = 5, seed: int = 0) -> list[Arch]:
    """``k`` architectures with ground truth in [low, high], spread over ``bins`` equal-width bins.

    Each bin gets k // bins (the first k % bins bins in a seeded random order one more); a bin
    with too few architectures gives all it has and the shortfall goes to the others. Within a bin
    the draw is uniform without replacement. Returned in ascending ground truth (ties by string),
    so the order says nothing about the proxies. A DataError when fewer than ``k`` lie in range.
    """
    if k < 2:
        raise DataError(f"fidelity.sample.k must be at least 2, got {k}")
    if bins < 1:
        raise DataError(f"fidelity.sample.bins must be at least 1, got {bins}")
    archs = sorted(truth.values, key=str)
    values = np.array([truth.values[a] for a in archs])
    lo = values.min() if low is None else low
    hi = values.max() if high is None else high
    if lo > hi:
        raise DataError(f"fidelity.sample: min {lo} is above max {hi}")
    inside = np.flatnonzero((values >= lo) & (values <= hi))
    if len(inside) < k:
        raise DataError(f"fidelity.sample.k = {k}, but only {len(inside)} architectures of {truth.source} have "
                        f"{truth.metric} in [{lo}, {hi}]: lower k or widen the range")
    rng = np.random.default_rng(seed)
    edges = np.linspace(lo, hi, bins + 1)
    which = np.clip(np.searchsorted(edges, values[inside], side="right") - 1, 0, bins - 1)
    members = [inside[which == b] for b in range(bins)]
    take = np.zeros(bins, dtype=int)
    remaining, open_bins = k, [b for b in range(bins) if len(members[b])]
    while remaining and open_bins:  # water-filling: equal shares, leftovers to bins that still have some
        order = rng.permutation(open_bins)
        share, extra = divmod(remaining, len(order))
        for position, b in enumerate(order):
            room = len(members[b]) - take[b]
            add = min(room, share + (position < extra))
            take[b] += add
            remaining -= add
        open_bins = [b for b in open_bins if take[b] < len(members[b])]
    chosen = np.concatenate([rng.choice(members[b], size=take[b], replace=False) for b in range(bins) if take[b]])
    picked = [archs[i] for i in chosen]
    return sorted(picked, key=lambda a: (truth.values[a], str(a)))
