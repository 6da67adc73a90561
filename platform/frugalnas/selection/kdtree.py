"""Sub-linear furthest-neighbour look-up: one kd-tree per class, searched branch-and-bound.

DDS-NAS calls its index an "approximate furthest-neighbour kd-tree" with logarithmic queries; how
it approximates is not public. This one is exact by default and approximate on request:

* Every node keeps its bounding box and its bounding ball (centroid, radius). The largest distance
  any point of the node can have from the query is at most the distance to the box's farthest
  corner, and at most ``|q - centroid| + radius``; the smaller of the two is the node's bound.
* Nodes are visited best-bound-first from a heap; a node whose bound cannot beat the best point
  found so far is never opened, so most of the tree is never touched when pruning works.
* Leaves are scanned with one vectorised numpy expression, the same one :class:`ExactFurthest`
  uses, so exact mode returns exactly what brute force returns (ties: smallest id).
* The exclusion set (the current subset, ~100-1000 ids) is turned into sorted tree positions once
  per query (vectorised, ``O(|exclude| log N)``); a leaf masks its excluded points with one binary
  search. Nothing in a query costs ``O(N)``.

Approximation knobs (all off by default = exact):

* ``eps`` only opens a node whose bound beats ``(1 + eps)`` times the best distance so far, so the
  answer is at least ``1 / (1 + eps)`` of the true furthest distance.
* ``max_leaves`` stops after that many leaves (the ones with the largest bounds).
* ``candidates`` first re-ranks the class's "outer shell": the ``candidates`` points farthest from
  the class centroid (precomputed). ``|p - q|^2 = |p - c|^2 + |q - c|^2 - 2 (p - c).(q - c)`` and
  in high dimension the cross term is small, so the furthest point is nearly always an outermost
  one. With ``max_leaves=0`` the shell alone answers, in ``O(candidates * D)`` whatever N is; with
  the tree search still on, the shell's best only seeds it (still exact).

Pruning weakens as the latent dimension grows (a node's box is split along only
~log2(N_class / leaf_size) of D axes, and the ball bound ``|q - c| + r`` overshoots the typical
``sqrt(|q - c|^2 + r^2)``): at D = 32 exact mode opens about half the tree and is at best ~2x
faster than brute force, while the shell stays fast at high recall. ``benchmarks/furthest_neighbour.py``
measures all of this (results in ``benchmarks/results/furthest_neighbour.md``).
"""
from __future__ import annotations

import heapq
from collections.abc import Collection

import numpy as np

from frugalnas.selection.furthest import FURTHEST_INDEXES, FurthestIndex, squared_distances


def _check_int(name: str, value, minimum: int, extra: str = "") -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}{extra}, got {value!r}")


@FURTHEST_INDEXES.register("kdtree")
class KDTreeFurthest(FurthestIndex):
    """Per-class kd-tree over latents, furthest-neighbour by best-first branch-and-bound.

    ``leaf_size``: most points in a leaf (a leaf is scanned in one numpy call; ~100 points
    amortise the Python cost of visiting it). ``fanout``: children per inner node (bounded
    together in one numpy call, so wide nodes mean fewer Python steps per query).
    ``max_leaves``, ``eps``, ``candidates``: the approximation knobs of the module docstring
    (defaults: exact); :meth:`set_approximation` changes them without rebuilding.
    Queries change no state except :attr:`last_leaves`, a statistic (leaves scanned).
    """

    def __init__(self, ids, latents, labels, leaf_size: int = 128, fanout: int = 16,
                 max_leaves: int | None = None, eps: float = 0.0, candidates: int = 0):
        super().__init__(ids, latents, labels)
        _check_int("leaf_size", leaf_size, minimum=1)
        _check_int("fanout", fanout, minimum=2)
        bad = np.flatnonzero(~np.isfinite(self.latents).all(axis=1))
        if len(bad):
            raise ValueError(f"latents of {len(bad)} images are not finite (NaN/inf), e.g. image "
                             f"id {int(self.ids[bad[0]])}; a distance to them is undefined")
        self.leaf_size, self.fanout = int(leaf_size), int(fanout)
        self.set_approximation(max_leaves, eps, candidates)
        # Float32 leaf distances may round up past the exact value the float64 bounds cover; this
        # relative slack keeps exact mode exact (its cost in pruning is nil).
        self._slack = 1.0 + 8 * (self.latents.shape[1] + 2) * float(np.finfo(np.float32).eps)
        self._build()
        self.last_leaves = 0  # leaves scanned by the latest query (for benchmarks and tests)

    def set_approximation(self, max_leaves: int | None = None, eps: float = 0.0,
                          candidates: int = 0) -> None:
        """Change the search's speed/recall trade-off without rebuilding the tree
        (``max_leaves=None, eps=0`` is exact, whatever ``candidates`` is)."""
        if max_leaves is not None:
            _check_int("max_leaves", max_leaves, minimum=0, extra=" or None")
        _check_int("candidates", candidates, minimum=0)
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not eps >= 0:
            raise ValueError(f"eps must be a number >= 0, got {eps!r}")
        self.max_leaves = None if max_leaves is None else int(max_leaves)
        self.eps = float(eps)
        self.candidates = int(candidates)
        self._prune_factor = (1.0 + self.eps) ** 2

    @property
    def n_leaves(self) -> int:
        return sum(child < 0 for child in self._child)

    # -- build -------------------------------------------------------------------------------

    def _build(self) -> None:
        # Points are stored class by class, each class in its tree's order, so every node is a
        # contiguous slice [start, end) of self._pts.
        order = np.argsort(self.labels, kind="stable")
        classes, class_start = np.unique(self.labels[order], return_index=True)
        class_end = np.append(class_start[1:], len(order))
        # Per-node lists, indexed by node number; a node's box/ball is filled when it is processed.
        starts, ends, first_child, n_child = [], [], [], []
        lo, hi, centre, radius = [], [], [], []
        self._roots: dict[int, int] = {}
        pts = self.latents

        def new_node(s: int, e: int) -> int:
            for column, value in ((starts, s), (ends, e), (first_child, -1), (n_child, 0),
                                  (lo, None), (hi, None), (centre, None), (radius, None)):
                column.append(value)
            return len(starts) - 1

        for c, s0, e0 in zip(classes, class_start, class_end):
            todo = [new_node(int(s0), int(e0))]
            self._roots[int(c)] = todo[0]
            while todo:
                node = todo.pop()
                s, e = starts[node], ends[node]
                block = pts[order[s:e]].astype(np.float64)
                lo[node], hi[node] = block.min(axis=0), block.max(axis=0)
                centre[node] = block.mean(axis=0)
                radius[node] = float(np.sqrt(((block - centre[node]) ** 2).sum(axis=1).max()))
                if e - s <= self.leaf_size:
                    continue
                perm, parts = self._split(block)
                if len(parts) == 1:
                    continue  # duplicates that no split can separate: a leaf
                # The children get consecutive node numbers so one numpy call bounds them all.
                order[s:e] = order[s:e][perm]
                first_child[node], n_child[node] = len(starts), len(parts)
                for a, b in parts:
                    todo.append(new_node(s + a, s + b))

        dim = pts.shape[1]
        self._lo = np.asarray(lo, dtype=np.float64).reshape(-1, dim)
        self._hi = np.asarray(hi, dtype=np.float64).reshape(-1, dim)
        self._centre = np.asarray(centre, dtype=np.float64).reshape(-1, dim)
        self._radius = np.asarray(radius, dtype=np.float64)
        # Topology stays in Python lists: the query loop indexes them one node at a time, and
        # list look-ups of Python ints are several times cheaper than numpy scalar indexing.
        self._start, self._end = starts, ends
        self._child, self._n_child = first_child, n_child

        self._pts = np.ascontiguousarray(pts[order])  # float32, tree order
        # The "outer shell" of each class: tree positions by distance from the class centroid,
        # farthest first. Furthest neighbours are nearly always among the outermost points, so
        # the first ``candidates`` of them make a cheap first guess (see furthest()).
        self._shell: dict[int, np.ndarray] = {}
        for c, s0, e0 in zip(classes, class_start, class_end):
            block = self._pts[s0:e0].astype(np.float64)
            spread = ((block - block.mean(axis=0)) ** 2).sum(axis=1)
            self._shell[int(c)] = s0 + np.argsort(-spread, kind="stable")
        self._pts_ids = self.ids[order]
        self._pos_of_row = np.empty(len(order), dtype=np.int64)
        self._pos_of_row[order] = np.arange(len(order))
        # Sorted ids -> tree positions, for vectorised exclusion look-up.
        by_id = np.argsort(self.ids, kind="stable")
        self._sorted_ids = self.ids[by_id]
        self._sorted_pos = self._pos_of_row[by_id]

    def _split(self, block: np.ndarray) -> tuple[np.ndarray, list[tuple[int, int]]]:
        """Split a node's points into up to ``fanout`` parts: repeated median splits, each part
        on its own widest axis. Returns the permutation of the block and the parts' ranges."""
        perm = np.arange(len(block))
        parts = [(0, len(block))]
        while len(parts) * 2 <= self.fanout:
            halves = []
            for a, b in parts:
                sub = block[perm[a:b]]
                spread = sub.max(axis=0) - sub.min(axis=0)
                dim = int(np.argmax(spread))
                if b - a <= self.leaf_size or spread[dim] == 0.0:
                    halves.append((a, b))
                    continue
                half = (b - a) // 2
                perm[a:b] = perm[a:b][np.argpartition(sub[:, dim], half)]
                halves += [(a, a + half), (a + half, b)]
            if len(halves) == len(parts):
                break
            parts = halves
        return perm, parts

    # -- query -------------------------------------------------------------------------------

    def _bounds(self, nodes: slice | np.ndarray, q: np.ndarray) -> np.ndarray:
        """Upper bounds on the squared distance from q to any point of each node."""
        far = np.maximum(np.abs(q - self._lo[nodes]), np.abs(self._hi[nodes] - q))
        corner = (far**2).sum(axis=1)
        ball = (np.sqrt(((q - self._centre[nodes]) ** 2).sum(axis=1)) + self._radius[nodes]) ** 2
        return np.minimum(corner, ball) * self._slack

    def _excluded_positions(self, exclude: Collection[int], query_pos: int) -> np.ndarray:
        """Sorted tree positions of the excluded ids (ids not in the index are ignored, as in
        ExactFurthest), plus the query itself. Duplicates are harmless, so none are removed."""
        if isinstance(exclude, np.ndarray):
            ex = exclude.astype(np.int64, copy=False).ravel()
        else:
            ex = np.fromiter(exclude, dtype=np.int64, count=len(exclude))
        at = np.minimum(np.searchsorted(self._sorted_ids, ex), len(self._sorted_ids) - 1)
        found = at[self._sorted_ids[at] == ex]
        return np.sort(np.append(self._sorted_pos[found], query_pos))

    def furthest(self, query_id, exclude=()):
        row = self.row_of(query_id)
        q_pos = int(self._pos_of_row[row])
        q32 = self._pts[q_pos]
        q = q32.astype(np.float64)
        excluded = self._excluded_positions(exclude, q_pos)

        # A node is opened when its bound reaches best * (1 + eps)^2; in exact mode (eps = 0) a
        # bound that only ties the best is opened too, as it may hold a tied, smaller id.
        factor = self._prune_factor
        best_d2, best_id = -1.0, None
        label = int(self.labels[row])
        if self.candidates:
            pool = self._shell[label][: self.candidates]
            at = np.minimum(np.searchsorted(excluded, pool), len(excluded) - 1)
            pool = pool[excluded[at] != pool]
            if len(pool):
                d2 = squared_distances(self._pts[pool], q32)
                best_d2 = float(d2.max())
                best_id = int(self._pts_ids[pool[d2 == best_d2]].min())
        root = self._roots[label]
        if self.max_leaves == 0 and best_id is not None:
            self.last_leaves = 0
            return best_id  # the pool alone answers
        heap = [(-float(self._bounds(slice(root, root + 1), q)[0]), root)]
        leaves = 0
        while heap:
            # The leaf budget only stops a search that has an answer: None means "all excluded".
            if self.max_leaves is not None and leaves >= self.max_leaves and best_id is not None:
                break
            neg_bound, node = heapq.heappop(heap)
            if -neg_bound < best_d2 * factor:
                break  # the heap is ordered by bound: no remaining node can do better
            child = self._child[node]
            if child >= 0:
                bounds = self._bounds(slice(child, child + self._n_child[node]), q).tolist()
                for k, bound in enumerate(bounds):
                    if bound >= best_d2 * factor:
                        heapq.heappush(heap, (-bound, child + k))
                continue
            s, e = self._start[node], self._end[node]
            d2 = squared_distances(self._pts[s:e], q32)
            i0, i1 = np.searchsorted(excluded, (s, e))
            d2[excluded[i0:i1] - s] = -np.inf
            leaves += 1
            top = float(d2.max())
            if top != -np.inf and top >= best_d2:
                cand = int(self._pts_ids[s:e][d2 == top].min())
                if top > best_d2 or cand < best_id:
                    best_d2, best_id = top, cand
        self.last_leaves = leaves
        return best_id
