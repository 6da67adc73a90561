"""Furthest-neighbour indexes: the kd-tree agrees with brute force, answers are always valid."""
import numpy as np
import pytest

from frugalnas.registry import UnknownNameError
from frugalnas.selection import FURTHEST_INDEXES, ExactFurthest
from frugalnas.selection.kdtree import KDTreeFurthest


def make_data(n, dim, n_classes, seed, grid=False):
    """Random latents; ids are a shuffled, non-contiguous range. ``grid``: small integer values,
    so many distances tie exactly (exercises the smallest-id tie-break)."""
    rng = np.random.default_rng(seed)
    ids = rng.permutation(5 * n)[:n] + 1000
    labels = rng.integers(0, n_classes, n)
    if grid:
        latents = rng.integers(-2, 3, (n, dim)).astype(np.float32)
    else:
        latents = (rng.normal(0, 2, (n_classes, dim))[labels] + rng.normal(0, 1, (n, dim))).astype(np.float32)
    return ids, latents, labels


def oracle(ids, latents, labels, query_id, exclude):
    """Independent brute force in float64: the largest distance any valid answer can have."""
    q = int(np.flatnonzero(ids == query_id)[0])
    ok = (labels == labels[q]) & ~np.isin(ids, list(exclude)) & (ids != query_id)
    if not ok.any():
        return None
    return np.sqrt(((latents[ok].astype(np.float64) - latents[q]) ** 2).sum(axis=1)).max()


def distance(ids, latents, a, b):
    ra, rb = int(np.flatnonzero(ids == a)[0]), int(np.flatnonzero(ids == b)[0])
    return float(np.linalg.norm(latents[ra].astype(np.float64) - latents[rb]))


def assert_valid(ids, latents, labels, query_id, exclude, answer):
    """The answer is a same-class image, not the query, not excluded; None only if none exists."""
    best = oracle(ids, latents, labels, query_id, exclude)
    if best is None:
        assert answer is None
        return
    assert answer is not None and answer != query_id and answer not in set(exclude)
    assert labels[ids == answer][0] == labels[ids == query_id][0]


@pytest.mark.parametrize(
    "n, dim, n_classes, leaf_size, fanout, grid",
    [
        (400, 1, 1, 4, 2, False),
        (600, 2, 3, 8, 4, False),
        (800, 8, 5, 16, 16, False),
        (500, 32, 3, 128, 16, False),
        (700, 3, 4, 4, 8, True),
        (300, 16, 2, 1, 2, True),
    ],
)
def test_exact_mode_equals_brute_force(n, dim, n_classes, leaf_size, fanout, grid):
    ids, latents, labels = make_data(n, dim, n_classes, seed=n + dim, grid=grid)
    exact = ExactFurthest(ids, latents, labels)
    tree = KDTreeFurthest(ids, latents, labels, leaf_size=leaf_size, fanout=fanout)
    rng = np.random.default_rng(dim)
    for k, query in enumerate(rng.choice(ids, 60, replace=False)):
        exclude = set(rng.choice(ids, [0, 5, n // 3, n // 2][k % 4], replace=False).tolist())
        expected = exact.furthest(query, exclude)
        assert tree.furthest(query, exclude) == expected
        assert_valid(ids, latents, labels, query, exclude, expected)
        if expected is not None:
            best = oracle(ids, latents, labels, query, exclude)
            assert distance(ids, latents, query, expected) == pytest.approx(best, rel=1e-5)


def test_ties_break_to_the_smallest_id():
    # Class 0: query at the origin; ids 7, 3 and 9 all lie at distance 2, id 5 at distance 1.
    ids = np.array([1, 7, 3, 9, 5])
    latents = np.array([[0, 0], [2, 0], [0, 2], [-2, 0], [1, 0]], dtype=np.float32)
    labels = np.zeros(5, dtype=int)
    for index in (ExactFurthest(ids, latents, labels), KDTreeFurthest(ids, latents, labels, leaf_size=1)):
        assert index.furthest(1) == 3
        assert index.furthest(1, exclude={3}) == 7
        assert index.furthest(1, exclude={3, 7, 9}) == 5


@pytest.mark.parametrize("cls", [ExactFurthest, KDTreeFurthest])
def test_exclusion_edge_cases(cls):
    ids, latents, labels = make_data(300, 4, 3, seed=1)
    index = cls(ids, latents, labels)
    query = int(ids[labels == 1][0])
    same_class = ids[labels == 1]
    others = [int(i) for i in same_class if i != query]
    # All but one excluded: that one is the answer.
    assert index.furthest(query, exclude=set(others[1:])) == others[0]
    # The whole class excluded (with or without the query itself): nothing qualifies.
    assert index.furthest(query, exclude=set(others)) is None
    assert index.furthest(query, exclude=set(same_class.tolist())) is None
    # Excluding every other class changes nothing; unknown ids in exclude are ignored.
    full = index.furthest(query)
    assert index.furthest(query, exclude=set(ids[labels != 1].tolist()) | {-5, 10**12}) == full
    # Any collection works, numpy arrays included.
    subset = others[:50]
    answers = {index.furthest(query, e) for e in (set(subset), subset, tuple(subset), np.array(subset))}
    assert len(answers) == 1 and answers.pop() not in subset


@pytest.mark.parametrize("cls", [ExactFurthest, KDTreeFurthest])
def test_single_image_class_has_no_answer(cls):
    ids, latents, labels = make_data(100, 3, 2, seed=2)
    labels[7] = 99
    assert cls(ids, latents, labels).furthest(ids[7]) is None


@pytest.mark.parametrize("cls", [ExactFurthest, KDTreeFurthest])
def test_unknown_query_id(cls):
    ids, latents, labels = make_data(50, 2, 2, seed=3)
    with pytest.raises(KeyError, match="image id 7 is not in the index"):
        cls(ids, latents, labels).furthest(7)


@pytest.mark.parametrize("cls", [ExactFurthest, KDTreeFurthest])
def test_shape_validation(cls):
    ids, latents, labels = make_data(50, 2, 2, seed=4)
    with pytest.raises(ValueError, match=r"must agree as \(N,\), \(N, D\), \(N,\)"):
        cls(ids, latents[:, 0], labels)
    with pytest.raises(ValueError, match="must agree"):
        cls(ids[:-1], latents, labels)
    with pytest.raises(ValueError, match="must agree"):
        cls(ids, latents, labels[:-1])
    dup = ids.copy()
    dup[1] = dup[0]
    with pytest.raises(ValueError, match="unique"):
        cls(dup, latents, labels)


def test_kdtree_rejects_bad_values_and_settings():
    ids, latents, labels = make_data(50, 2, 2, seed=5)
    bad = latents.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match=f"not finite.*image id {ids[3]}"):
        KDTreeFurthest(ids, bad, labels)
    for kwargs, culprit in [
        ({"leaf_size": 0}, "leaf_size"),
        ({"leaf_size": 2.5}, "leaf_size"),
        ({"fanout": 1}, "fanout"),
        ({"eps": -0.1}, "eps"),
        ({"eps": float("nan")}, "eps"),
        ({"max_leaves": -1}, "max_leaves"),
        ({"max_leaves": 2.5}, "max_leaves"),
        ({"candidates": True}, "candidates"),
    ]:
        with pytest.raises(ValueError, match=culprit):
            KDTreeFurthest(ids, latents, labels, **kwargs)


@pytest.mark.parametrize("cls", [ExactFurthest, KDTreeFurthest])
def test_empty_index_builds_and_knows_no_ids(cls):
    index = cls(np.zeros(0, int), np.zeros((0, 4), np.float32), np.zeros(0, int))
    with pytest.raises(KeyError, match="not in the index"):
        index.furthest(0)


def test_registry_names_the_kdtree():
    assert FURTHEST_INDEXES.get("kdtree") is KDTreeFurthest
    assert FURTHEST_INDEXES.get("exact") is ExactFurthest
    with pytest.raises(UnknownNameError, match="allowed: exact, kdtree"):
        FURTHEST_INDEXES.get("balltree")


@pytest.mark.parametrize(
    "settings",
    [
        {"eps": 0.1},
        {"max_leaves": 1},
        {"max_leaves": 3, "eps": 0.5},
        {"candidates": 8, "max_leaves": 0},
        {"candidates": 3, "max_leaves": 2},
        {"candidates": 40},  # pool + unlimited tree search = still exact
    ],
)
def test_approximate_modes_give_valid_answers(settings):
    ids, latents, labels = make_data(1500, 6, 3, seed=6)
    exact = ExactFurthest(ids, latents, labels)
    tree = KDTreeFurthest(ids, latents, labels, leaf_size=8, **settings)
    rng = np.random.default_rng(7)
    for k, query in enumerate(rng.choice(ids, 80, replace=False)):
        exclude = set(rng.choice(ids, [0, 300, 1000][k % 3], replace=False).tolist())
        answer = tree.furthest(query, exclude)
        assert_valid(ids, latents, labels, query, exclude, answer)
        best = oracle(ids, latents, labels, query, exclude)
        if best is None:
            continue
        got = distance(ids, latents, query, answer)
        if settings.get("max_leaves") is None:  # only eps limits the error: it is bounded
            assert got * (1 + settings.get("eps", 0.0)) >= best * (1 - 1e-6)
        if settings == {"candidates": 40}:
            assert answer == exact.furthest(query, exclude)


def test_pool_only_mode_falls_back_to_the_tree_when_the_pool_is_excluded():
    ids, latents, labels = make_data(400, 3, 1, seed=8)
    tree = KDTreeFurthest(ids, latents, labels, leaf_size=8, candidates=5, max_leaves=0)
    query = int(ids[0])
    pool_ids = set(tree._pts_ids[tree._shell[0][:5]].tolist())
    answer = tree.furthest(query, exclude=pool_ids)
    assert answer is not None and answer not in pool_ids and answer != query
    assert tree.last_leaves >= 1


def test_exact_search_is_sublinear_in_low_dimension():
    # One class of 20000 points in 2-D: best-first branch-and-bound opens a small share of leaves.
    ids, latents, labels = make_data(20000, 2, 1, seed=9)
    tree = KDTreeFurthest(ids, latents, labels, leaf_size=16)
    exclude = set(ids[:1000].tolist())
    scanned = []
    for query in ids[1000:1020]:
        tree.furthest(query, exclude)
        scanned.append(tree.last_leaves)
    assert max(scanned) < 0.05 * tree.n_leaves, (scanned, tree.n_leaves)


def test_set_approximation_changes_search_not_answers_in_exact_mode():
    ids, latents, labels = make_data(2000, 5, 2, seed=10)
    tree = KDTreeFurthest(ids, latents, labels, leaf_size=8)
    exact = ExactFurthest(ids, latents, labels)
    query = int(ids[5])
    tree.set_approximation(max_leaves=1)
    tree.furthest(query)
    assert tree.last_leaves == 1
    tree.set_approximation()  # back to exact
    assert tree.furthest(query) == exact.furthest(query)
    assert tree.last_leaves >= 1
