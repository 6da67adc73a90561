"""Furthest-neighbour indexes: build time, query time and recall@1 against exact brute force.

    .venv/bin/python benchmarks/furthest_neighbour.py           # N = 1e3 .. 1e6, ~5-10 minutes
    .venv/bin/python benchmarks/furthest_neighbour.py --quick   # N = 1e3 .. 1e4, seconds

Data (seeded, stands in for autoencoder latents): 10 classes; each class has 4 sub-clusters
(DDS-NAS classes are multi-modal in latent space). Class centres ~ N(0, 3^2 I), sub-cluster
centres = class centre + N(0, 1.5^2 I); a point = its sub-cluster centre + N(0, diag(s^2)) with
per-axis scales s falling geometrically from 1.5 to 0.3 (latents use some axes more than others),
then the whole cloud is turned by one random rotation, so no axis is special to the kd-tree.
Classes get about N/10 points each; ids are a random permutation of 0..3N-1 (not row numbers).

Every query uses an exclusion set of 1000 random ids (the DDS subset; 100 at N = 1e3, where 1000
would be every image) and asks, for an image of that subset, for the furthest same-class image
outside it. All indexes answer the same queries in the same process, one after
the other; recall@1 = share of queries whose answer is the exact answer (brute force), and
dist_ratio = mean of answer distance / exact furthest distance (1.0 = always as far).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

from frugalnas.selection import ExactFurthest
from frugalnas.selection.kdtree import KDTreeFurthest

RESULTS = Path(__file__).resolve().parent / "results"
N_CLASSES, N_SUBCLUSTERS, N_EXCLUDE, REPEATS = 10, 4, 1000, 3
# (name, KDTreeFurthest.set_approximation kwargs, or None for brute force). One tree (default
# leaf_size=128, fanout=16) serves every kd-tree mode: the modes only change how it is searched.
MODES = [
    ("exact (brute force)", None),
    ("kdtree exact", {}),
    ("kdtree eps=0.05", {"eps": 0.05}),
    ("kdtree max_leaves=32", {"max_leaves": 32}),
    ("kdtree shell=256", {"candidates": 256, "max_leaves": 0}),
    ("kdtree shell=1024", {"candidates": 1024, "max_leaves": 0}),
]


# What the numbers mean, in words; checked against the committed results (re-read them if the
# script or the index changes).
INTERPRETATION = """\
- Exact mode is sub-linear in practice only in low dimension: at D = 8 it opens ~1% of a large
  class's leaves and is more than 10x faster than brute force at N = 1e6. Pruning fades with
  dimension (the bounds overshoot; see the share of leaves opened): at D = 16 it still wins ~5x
  at N = 1e6, at D = 32 it opens about half the tree and wins only ~2x, and ~1.4x at N = 1e5.
- At N <= 1e4 (a few hundred to a thousand points per class) every method costs well under a
  millisecond; the gaps there (up to ~2-3x) are per-query overheads (brute force's isin over
  the class's ids, the tree's exclusion-set conversion), not pruning.
- The fast approximate mode is the outer shell (re-rank the K points farthest from the class
  centroid): constant cost in N, ~40-120x faster than brute force at N = 1e6 in every
  dimension, recall@1 ~0.91-1.0, mean answer distance within ~3% of the furthest. Its recall
  falls slowly as classes grow (a fixed K is a smaller share of a bigger class): raise K for
  large classes. Whether a near-furthest swap serves DDS-NAS as well as the exact one is not
  measured here.
- eps and max_leaves are weaker trade-offs: in high dimension the best-bound leaf order finds
  the furthest point late, so a leaf budget loses recall fast (max_leaves=32 at D = 32, N = 1e6).
- Build time grows ~N log N (about 5-11 s at N = 1e6 here); it is paid once per latent space.
- Timings are from a 2-core machine shared with other jobs (load average in the header), so
  individual rows move by tens of percent between runs; recall and leaves scanned do not
  (seeded data and queries).
"""


def make_latents(n: int, dim: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ids (n,), float32 latents (n, dim), labels (n,): the mixture described in the docstring."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, N_CLASSES, n)
    sub = rng.integers(0, N_SUBCLUSTERS, n)
    class_centres = rng.normal(0.0, 3.0, (N_CLASSES, 1, dim))
    sub_centres = class_centres + rng.normal(0.0, 1.5, (N_CLASSES, N_SUBCLUSTERS, dim))
    scales = np.geomspace(1.5, 0.3, dim)
    latents = sub_centres[labels, sub] + rng.standard_normal((n, dim)) * scales
    rotation, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
    ids = rng.permutation(3 * n)[:n]
    return ids, (latents @ rotation).astype(np.float32), labels


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def run_case(n: int, dim: int, n_queries: int, seed: int) -> list[dict]:
    ids, latents, labels = make_latents(n, dim, seed)
    rng = np.random.default_rng(seed + 1)
    subset = rng.choice(ids, min(N_EXCLUDE, n // 10), replace=False)
    exclude = set(subset.tolist())
    # Queries come from the subset itself, as in DDS-NAS (an easy image being swapped out).
    queries = rng.choice(subset, n_queries, replace=len(subset) < n_queries)

    exact, exact_build = timed(lambda: ExactFurthest(ids, latents, labels))
    tree, tree_build = timed(lambda: KDTreeFurthest(ids, latents, labels))
    row_of = {int(i): r for r, i in enumerate(ids)}

    def dist(a: int, b: int) -> float:
        return float(np.linalg.norm(latents[row_of[a]] - latents[row_of[b]]))

    truth, rows = None, []
    for name, search in MODES:
        index = exact if search is None else tree
        if search is not None:
            index.set_approximation(**search)
        answers, leaves = [], []
        for q in queries:
            answers.append(index.furthest(int(q), exclude))
            leaves.append(getattr(index, "last_leaves", 0))
        # Timed separately, best of REPEATS passes: the machine is shared, and the least
        # disturbed pass is the best estimate of the index's own cost (timeit's rule).
        passes = []
        for _ in range(REPEATS):
            t0 = time.perf_counter()
            for q in queries:
                index.furthest(int(q), exclude)
            passes.append((time.perf_counter() - t0) / n_queries)
        query_s = min(passes)
        if truth is None:
            truth = answers
        ratios = [dist(q, a) / dist(q, t) for q, a, t in zip(queries, answers, truth)
                  if a is not None and t is not None and dist(q, t) > 0]
        rows.append({
            "n": n, "dim": dim, "index": name, "queries": n_queries,
            "build_s": exact_build if search is None else tree_build,
            "query_ms": 1e3 * query_s,
            "recall_at_1": float(np.mean([a == t for a, t in zip(answers, truth)])),
            "dist_ratio": float(np.mean(ratios)) if ratios else None,
            "leaves_scanned": float(np.mean(leaves)) if search is not None else None,
            "leaves_total": tree.n_leaves if search is not None else None,
        })
        print(f"N={n:>8} D={dim:>2} {name:22s} build {rows[-1]['build_s']:7.2f}s  "
              f"query {rows[-1]['query_ms']:8.3f} ms  recall@1 {rows[-1]['recall_at_1']:.3f}  "
              f"dist_ratio {rows[-1]['dist_ratio'] or float('nan'):.4f}", flush=True)
    return rows


def fmt_n(n: int) -> str:
    return f"{n:.0e}".replace("e+0", "e")


def summary(rows: list[dict]) -> list[str]:
    """Plain statements read off the measurements (so they stay true when the script re-runs)."""
    base = {(r["n"], r["dim"]): r["query_ms"] for r in rows if r["leaves_scanned"] is None}
    out = []
    for name, _ in MODES[1:]:
        mine = [r for r in rows if r["index"] == name]
        slower = [f"N={fmt_n(r['n'])}/D={r['dim']} ({base[r['n'], r['dim']] / r['query_ms']:.1f}x)"
                  for r in mine if r["query_ms"] >= base[r["n"], r["dim"]]]
        top = max(r["n"] for r in mine)
        at_top = ", ".join(f"D={r['dim']}: {base[r['n'], r['dim']] / r['query_ms']:.1f}x, recall "
                           f"{r['recall_at_1']:.3f}" for r in mine if r["n"] == top)
        worst = min(mine, key=lambda r: r["recall_at_1"])
        out.append(f"- **{name}**: at N={fmt_n(top)} {at_top}. Not faster than brute force at: "
                   f"{', '.join(slower) if slower else 'none of the sizes measured'}. Lowest "
                   f"recall@1 {worst['recall_at_1']:.3f} (N={fmt_n(worst['n'])}, D={worst['dim']}).")
    exact = [r for r in rows if r["index"] == "kdtree exact" and r["leaves_total"] > N_CLASSES]
    share = ", ".join(f"N={fmt_n(r['n'])}/D={r['dim']}: "
                      f"{100 * r['leaves_scanned'] / (r['leaves_total'] / N_CLASSES):.0f}%"
                      for r in exact)
    out.append(f"- Share of the query class's leaves the exact search opens (pruning power; "
               f"classes hold ~N/10 points): {share}.")
    return out


def markdown(rows: list[dict], meta: dict) -> str:
    lines = [
        "# Furthest-neighbour index benchmark",
        "",
        f"Generated by `{' '.join(['benchmarks/furthest_neighbour.py'] + meta['argv'])}` "
        f"({meta['when']}; {meta['machine']}, shared with other jobs: load average "
        f"{meta['load_before']:.1f} before, {meta['load_after']:.1f} after; Python "
        f"{meta['python']}, numpy {meta['numpy']}). Data: seeded Gaussian-mixture latents (10 "
        "classes x 4 rotated anisotropic sub-clusters, see the script's docstring); each query "
        f"is an image of a {N_EXCLUDE}-id exclusion set (100 at N = 1e3), which its answer must "
        "avoid. Brute force and the kd-tree modes answer the same queries in the same run, one "
        "after the other, single-threaded. Query time is the mean per query (best of "
        f"{REPEATS} timed passes over the same queries: the machine is shared); speed-up is against "
        "brute force on the same row group; recall@1 = share of answers equal to the exact one; "
        "dist ratio = mean answer distance / exact furthest distance.",
        "",
        "Modes (one tree per N and D, leaf_size 128, fanout 16; the mode only changes the search):",
        "exact = best-first branch-and-bound, returns exactly brute force's answer; "
        "eps=0.05 = prune nodes that cannot beat the best by 5% (answer >= 1/1.05 of the furthest "
        "distance); max_leaves=32 = stop after 32 leaves; shell=K = re-rank only the K points of "
        "the class farthest from its centroid (no tree walk unless all K are excluded).",
        "",
        "| N | D | index | build s | query ms | speed-up | recall@1 | dist ratio | leaves scanned / all |",
        "|---:|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    base = {}
    for r in rows:
        key = (r["n"], r["dim"])
        if r["leaves_scanned"] is None:
            base[key] = r["query_ms"]
        speed = base[key] / r["query_ms"]
        leaves = ("" if r["leaves_scanned"] is None
                  else f"{r['leaves_scanned']:.0f} / {r['leaves_total']}")
        ratio = "" if r["dist_ratio"] is None else f"{r['dist_ratio']:.4f}"
        lines.append(f"| {fmt_n(r['n'])} | {r['dim']} | {r['index']} | {r['build_s']:.2f} | "
                     f"{r['query_ms']:.3f} | {speed:.1f}x | {r['recall_at_1']:.3f} | {ratio} | "
                     f"{leaves} |")
    lines += ["", "## Read off the numbers (generated from the rows above)", ""] + summary(rows)
    lines += ["", "## Interpretation", "", INTERPRETATION]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="N = 1e3, 1e4 only (seconds)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for the .json/.md")
    args = parser.parse_args(argv)

    sizes = [1_000, 10_000] if args.quick else [1_000, 10_000, 100_000, 1_000_000]
    queries = {1_000: 300, 10_000: 300, 100_000: 300, 1_000_000: 200}
    load_before = os.getloadavg()[0]
    rows = []
    for n in sizes:
        for dim in (8, 16, 32):
            rows += run_case(n, dim, queries[n], args.seed)

    meta = {
        "when": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "python": platform.python_version(),
        "numpy": np.__version__,
        "load_before": load_before,
        "load_after": os.getloadavg()[0],
        "seed": args.seed,
        "exclude": N_EXCLUDE,
        "argv": sys.argv[1:],
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "furthest_neighbour.json").write_text(json.dumps({"meta": meta, "rows": rows},
                                                                 indent=1))
    (args.out / "furthest_neighbour.md").write_text(markdown(rows, meta))
    print(f"wrote {args.out / 'furthest_neighbour.md'}")


if __name__ == "__main__":
    main()
