"""A synthetic NAS-Bench-201-like accuracy table, for testing and benchmarking search strategies
offline (the real NAS-Bench-201 table cannot be downloaded here).

All 15,625 cells of the NAS-Bench-201 space get a CIFAR-10-like test accuracy (%) built from the
structure that shapes the real table:

* connectivity: a cell whose output cannot be reached from its input without passing a ``none``
  edge scores ~10% (chance), as in NAS-Bench-201; an edge that lies on no input-output path
  ("dead") has no effect, so many cells are equivalent, as isomorphic cells are there;
* capacity: each live edge adds an op- and edge-dependent amount (conv 3x3 > conv 1x1 > skip >
  pool), and accuracy saturates in the total (diminishing returns), from ~55-75% for cells with
  only skips and pools up to ~94.4%;
* interactions: a residual skip on the input-output edge helps when a path of two or more
  convolutions exists (the best real cells have this), several pools into one node hurt, and a
  few random pairwise (edge, op) x (edge, op) effects;
* noise: N(0, ``noise``) per cell (training noise).

Seeded: the same seed gives the same table.
"""
from __future__ import annotations

import csv
import itertools
from pathlib import Path

import numpy as np

from frugalnas.spaces.nb201 import EDGES, NB201Arch

OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
# capacity an op adds on a live edge (before the per-edge weight); none adds nothing
OP_CAPACITY = {"none": 0.0, "skip_connect": 0.12, "nor_conv_1x1": 0.6, "nor_conv_3x3": 1.0, "avg_pool_3x3": 0.08}
CONVS = ("nor_conv_1x1", "nor_conv_3x3")
TOP = 95.7  # accuracy approached by a cell of unlimited capacity


def _live_edges(ops: tuple[str, ...]) -> list[bool]:
    """Per edge: not ``none``, reachable from the input and reaching the output (node 3)."""
    reach_in = [True, False, False, False]
    for k, (i, j) in enumerate(EDGES):  # EDGES are in topological order of their target
        if ops[k] != "none" and reach_in[j]:
            reach_in[i] = True
    reach_out = [False, False, False, True]
    for k, (i, j) in reversed(list(enumerate(EDGES))):
        if ops[k] != "none" and reach_out[i]:
            reach_out[j] = True
    return [ops[k] != "none" and reach_in[j] and reach_out[i] for k, (i, j) in enumerate(EDGES)]


def _conv_depth(ops: tuple[str, ...], live: list[bool]) -> int:
    """The most convolutions on one live input-output path."""
    depth = [0, -99, -99, -99]  # -99: not reachable
    for k, (i, j) in enumerate(EDGES):
        if live[k]:
            depth[i] = max(depth[i], depth[j] + (ops[k] in CONVS))
    return max(depth[3], 0)


class NB201LikeLandscape:
    """The accuracy function; its random parts (edge weights, interactions) come from ``seed``."""

    def __init__(self, seed: int = 0, noise: float = 0.12):
        rng = np.random.default_rng(seed)
        self.noise = noise
        self.edge_weight = rng.uniform(0.7, 1.3, size=len(EDGES))
        self.op_jitter = rng.normal(0.0, 0.08, size=(len(EDGES), len(OPS)))
        self.interactions = []
        for _ in range(6):
            a, b = rng.choice(len(EDGES), size=2, replace=False)
            op_a, op_b = (OPS[int(i)] for i in rng.integers(1, len(OPS), size=2))
            self.interactions.append((int(a), op_a, int(b), op_b, float(rng.normal(0.0, 0.15))))
        self._rng = rng

    def mean_accuracy(self, ops: tuple[str, ...]) -> float:
        """The noiseless accuracy (%) of the cell with these edge ops."""
        live = _live_edges(ops)
        if not any(live):  # no live edge: the output cannot be reached from the input
            return 10.0
        capacity = sum(max(0.0, OP_CAPACITY[op] + (self.op_jitter[k, OPS.index(op)] if op != "none" else 0.0))
                       * self.edge_weight[k] for k, op in enumerate(ops) if live[k])
        accuracy = TOP - 35.0 * np.exp(-capacity / 0.35) - 10.0 * np.exp(-capacity / 3.0)
        depth = _conv_depth(ops, live)
        if depth >= 2 and ops[3] == "skip_connect":  # residual input->output edge around a deep path
            accuracy += 0.55
        for node in (1, 2, 3):  # several pools into one node blur the features
            pools = sum(live[k] and ops[k] == "avg_pool_3x3" for k, (i, _) in enumerate(EDGES) if i == node)
            accuracy -= 0.4 * max(0, pools - 1)
        for a, op_a, b, op_b, effect in self.interactions:
            if live[a] and live[b] and ops[a] == op_a and ops[b] == op_b:
                accuracy += effect
        return float(accuracy)

    def table(self) -> dict[str, float]:
        """Canonical NAS-Bench-201 string -> accuracy (%) for all 15,625 cells (noise included)."""
        out = {}
        for ops in itertools.product(OPS, repeat=len(EDGES)):
            value = self.mean_accuracy(ops) + self.noise * float(self._rng.standard_normal())
            out[str(NB201Arch(ops))] = round(min(max(value, 0.0), 100.0), 4)
        return out


def nb201_like_table(seed: int = 0, noise: float = 0.12) -> dict[str, float]:
    """Canonical NAS-Bench-201 string -> synthetic CIFAR-10-like accuracy (%), all 15,625 cells."""
    return NB201LikeLandscape(seed, noise).table()


def write_nb201_like_csv(path: str | Path, seed: int = 0, noise: float = 0.12,
                         arch_column: str = "arch", metric_column: str = "accuracy") -> Path:
    """Write :func:`nb201_like_table` as a CSV with columns ``arch_column, metric_column``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow([arch_column, metric_column])
        for arch, value in nb201_like_table(seed, noise).items():
            writer.writerow([arch, value])
    return path


if __name__ == "__main__":  # python -m frugalnas.strategies.synthetic OUT.csv [SEED]
    import sys

    if len(sys.argv) not in (2, 3):
        raise SystemExit("usage: python -m frugalnas.strategies.synthetic OUT.csv [SEED]")
    written = write_nb201_like_csv(sys.argv[1], seed=int(sys.argv[2]) if len(sys.argv) == 3 else 0)
    print(f"wrote {written}")
