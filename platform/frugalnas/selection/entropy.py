"""``entropy``: a static proxy subset sampled by prediction entropy (Na et al., IJCAI 2021,
"Accelerating Neural Architecture Search via Proxy Data").

A small reference model, trained once per dataset on the whole training split, scores every
training image by the entropy of its softmax prediction. The paper's sampler (its code,
``nabk89/NAS-with-Proxy-data``, ``sampler.py``, histogram type P1, the one it recommends):

* histogram of log10(entropy) with bins of a fixed width (0.5 for CIFAR-10, 0.25 for CIFAR-100 and
  ImageNet, 0.2 for SVHN), edges on multiples of the width;
* bin probability proportional to ``max_count - count + 1`` for non-empty bins (0 for empty ones),
  so the rare tails (very confident and very uncertain images) are over-weighted against the crowded
  middle;
* each image gets its bin's probability divided by the bin's count (uniform within a bin), and the
  subset is drawn from all training images at once, without replacement, with those weights.

Not class-balanced: the paper samples over the whole training set regardless of label, and so does
this selector (class counts of the subset follow the entropy histogram; every class keeps images in
practice, since each spans many bins). The subset is drawn once and trained every epoch, each epoch
in a fresh seeded permutation.
"""
from __future__ import annotations

import hashlib
import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from frugalnas.errors import DataError
from frugalnas.selection.base import SELECTORS, check_int, preview
from frugalnas.selection.random_subset import StaticSubset

#: Entropies below this (a prediction with probability ~1) are floored before the log10.
ENTROPY_FLOOR = 1e-12
#: The paper's bin width for CIFAR-10 (log10 units).
DEFAULT_BIN_WIDTH = 0.5


def entropy_histogram(entropy: np.ndarray, bin_width: float = DEFAULT_BIN_WIDTH) -> dict:
    """The paper's histogram of log10(entropy): ``edges`` (B + 1 values on multiples of
    ``bin_width``), ``bin`` (each image's bin, 0..B-1), ``counts`` (B,) and ``probability`` (B,):
    (max_count - count + 1) for non-empty bins, 0 for empty ones, normalised."""
    entropy = np.asarray(entropy, dtype=np.float64)
    if entropy.ndim != 1 or not len(entropy):
        raise ValueError(f"entropy must be a non-empty 1-D array, got shape {entropy.shape}")
    if not np.isfinite(entropy).all() or (entropy < 0).any():
        raise ValueError("entropy values must be finite and >= 0")
    if not bin_width > 0:
        raise ValueError(f"bin_width must be > 0, got {bin_width!r}")
    x = np.log10(np.maximum(entropy, ENTROPY_FLOOR))
    low = math.floor(x.min() / bin_width) * bin_width
    n_bins = max(1, int(math.floor((x.max() - low) / bin_width)) + 1)
    bins = np.clip(np.floor((x - low) / bin_width).astype(np.int64), 0, n_bins - 1)
    counts = np.bincount(bins, minlength=n_bins)
    weight = (counts.max() - counts + 1) * (counts > 0)
    return {"edges": low + bin_width * np.arange(n_bins + 1), "bin": bins, "counts": counts,
            "probability": weight / weight.sum()}


def entropy_sample(ids: np.ndarray, entropy: np.ndarray, size: int, rng: np.random.Generator,
                   bin_width: float = DEFAULT_BIN_WIDTH) -> tuple[np.ndarray, dict]:
    """Draw ``size`` of ``ids`` without replacement by the paper's rule (bin probability over the bin's
    count per image); returns (chosen ids in draw order, the histogram with ``selected`` per bin)."""
    ids = np.asarray(ids, dtype=np.int64)
    histogram = entropy_histogram(entropy, bin_width)
    per_image = histogram["probability"][histogram["bin"]] / histogram["counts"][histogram["bin"]]
    chosen_rows = rng.choice(len(ids), size=size, replace=False, p=per_image / per_image.sum())
    histogram["selected"] = np.bincount(histogram["bin"][chosen_rows], minlength=len(histogram["counts"]))
    return ids[chosen_rows], histogram


@SELECTORS.register("entropy")
class EntropySubset(StaticSubset):
    """A static subset of ``subset_size`` images drawn once by :func:`entropy_sample` from the
    reference model's ``entropy`` = (ids, values) (covering every training id; other ids are ignored,
    so scores of the whole training split serve any part of it), trained every epoch in a fresh
    seeded permutation. :attr:`histogram` records the bins, their counts, probabilities and how many
    images each gave."""

    name = "entropy"
    uses_feedback = False
    needs = ("entropy",)

    def __init__(self, train_ids, train_labels, *, entropy, subset_size=None, seed=0,
                 bin_width=DEFAULT_BIN_WIDTH):
        super().__init__(train_ids, train_labels, subset_size=subset_size, seed=seed)
        if subset_size is None:
            raise ValueError(f"subset_size is required for the entropy selector (1 .. {len(self.train_ids)})")
        self.subset_size = check_int("subset_size", subset_size, minimum=1)
        if self.subset_size > len(self.train_ids):
            raise ValueError(f"subset_size {self.subset_size} is larger than the number of training images "
                             f"{len(self.train_ids)}")
        if isinstance(bin_width, bool) or not isinstance(bin_width, (int, float)) or not bin_width > 0:
            raise ValueError(f"bin_width must be a number > 0 (log10 units; the paper: 0.5 for CIFAR-10), "
                             f"got {bin_width!r}")
        self.bin_width = float(bin_width)
        values = scores_for(self._sorted_ids, entropy)
        self.entropy_fingerprint = hashlib.sha256(values.tobytes()).hexdigest()[:16]
        chosen, histogram = entropy_sample(self._sorted_ids, values, self.subset_size, self._rng, self.bin_width)
        self._subset = np.sort(chosen)
        self.histogram = {"edges": histogram["edges"].tolist(), "counts": histogram["counts"].tolist(),
                          "probability": histogram["probability"].tolist(),
                          "selected": histogram["selected"].tolist()}

    def params(self) -> dict:
        return {"seed": self.seed, "subset_size": self.subset_size, "bin_width": self.bin_width,
                "entropy_fingerprint": self.entropy_fingerprint}


def scores_for(ids: np.ndarray, entropy) -> np.ndarray:
    """The entropy of each of ``ids`` from ``entropy`` = (ids, values); a clear error for any id
    without a score."""
    if not (isinstance(entropy, tuple) and len(entropy) == 2):
        raise TypeError("entropy must be (ids, values) arrays, e.g. from load_entropy_scores(path)")
    score_ids, values = np.asarray(entropy[0], dtype=np.int64), np.asarray(entropy[1], dtype=np.float64)
    if score_ids.shape != values.shape or score_ids.ndim != 1:
        raise ValueError(f"entropy ids {score_ids.shape} and values {values.shape} must be 1-D of one length")
    order = np.argsort(score_ids)
    score_ids, values = score_ids[order], values[order]
    pos = np.minimum(np.searchsorted(score_ids, ids), max(len(score_ids) - 1, 0))
    missing = ids[score_ids[pos] != ids] if len(score_ids) else ids
    if missing.size:
        raise ValueError(f"the entropy scores lack {missing.size} training image(s): ids {preview(missing)}; "
                         "score them with the same dataset")
    return values[pos]


def save_entropy_scores(path: str | Path, ids: np.ndarray, entropy: np.ndarray) -> Path:
    """Write (id int64, entropy float64) to a Parquet file (via a temporary file and a rename)."""
    import os

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.table({"id": pa.array(np.asarray(ids, dtype=np.int64)),
                      "entropy": pa.array(np.asarray(entropy, dtype=np.float64))})
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, path)
    return path


def load_entropy_scores(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """(ids, entropies) from a file written by :func:`save_entropy_scores` (or any Parquet file with
    columns ``id`` and ``entropy``)."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"entropy scores file {path} does not exist: make it with ensure_entropy_scores")
    try:
        table = pq.read_table(path)
    except pa.ArrowInvalid as error:
        raise DataError(f"entropy scores file {path} is not a readable Parquet file: {error}") from None
    if not {"id", "entropy"} <= set(table.column_names):
        raise DataError(f"entropy scores file {path} needs columns id and entropy; it has {table.column_names}")
    if table["entropy"].null_count:
        raise DataError(f"entropy scores file {path} has {table['entropy'].null_count} missing value(s)")
    return table["id"].to_numpy().astype(np.int64), table["entropy"].to_numpy().astype(np.float64)
