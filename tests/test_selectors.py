"""Data selectors (full, random, dynamic-random, dds) on synthetic data with a simulated learner.

The learner is a deterministic function of (image id, epoch), so no torch is needed and every run
is reproducible.
"""
from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest

from frugalnas.registry import UnknownNameError
from frugalnas.selection import (
    SELECTORS,
    DDSSelector,
    DynamicRandomSelector,
    ExactFurthest,
    FurthestIndex,
    make_selector,
)
from frugalnas.selection.base import balanced_subset

N_CLASSES, PER_CLASS, DIM = 10, 50, 4


@pytest.fixture(scope="module")
def data():
    """10 classes x 50 images; ids are scattered, not row positions, so id/row mix-ups show."""
    rng = np.random.default_rng(123)
    n = N_CLASSES * PER_CLASS
    ids = rng.choice(np.arange(10_000, 20_000), size=n, replace=False).astype(np.int64)
    labels = np.repeat(np.arange(N_CLASSES), PER_CLASS)[rng.permutation(n)]
    latents = rng.normal(size=(n, DIM)).astype(np.float32)
    return ids, labels, latents


def hash01(ids, salt: int) -> np.ndarray:
    """A fixed pseudo-random number in [0, 1) per (id, salt) (Knuth multiplicative hash)."""
    x = (np.asarray(ids, dtype=np.uint64) * np.uint64(2654435761) + np.uint64(salt * 40503 + 17))
    x ^= x >> np.uint64(13)
    x = (x * np.uint64(0x5BD1E995)) % np.uint64(2**32)
    return x.astype(np.float64) / 2**32


def learner(ids, epoch, accuracy=0.75):
    """Right on about ``accuracy`` of the images, confidence uniform: about 7% come out easy."""
    correct = hash01(ids, epoch) < accuracy
    confidence = hash01(ids, epoch + 7919)
    return confidence, correct


def make(name, data, **kw):
    ids, labels, latents = data
    kw.setdefault("seed", 0)
    if name != "full":
        kw.setdefault("subset_size", 100)
    if name in ("dds", "dds-coverage"):
        kw.setdefault("index", ExactFurthest(ids, latents, labels))
    if name in ("dds", "dds-coverage", "dynamic-random"):
        kw.setdefault("warmup_epochs", 2)
    if name == "entropy":  # log-uniform entropies over 1e-6 .. 1 (about 12 bins of width 0.5)
        kw.setdefault("entropy", (ids, 10 ** (-6 * hash01(ids, 99))))
    return make_selector(name, ids, labels, **kw)


def step(sel, learn=learner):
    """One epoch of a training loop: plan, train (simulated) in two batches, observe."""
    plan = sel.next_epoch()
    if plan.train:
        conf, correct = learn(plan.ids, plan.epoch)
        half = len(plan.ids) // 2
        sel.observe(plan.ids[:half], conf[:half], correct[:half])
        sel.observe(plan.ids[half:], conf[half:], correct[half:])
    return plan


def same_plan(a, b):
    return (a.epoch, a.train, a.updated, a.replaced) == (b.epoch, b.train, b.updated, b.replaced) and (
        np.array_equal(a.ids, b.ids)
    )


def class_counts(sel, labels_by_id):
    return Counter(labels_by_id[i] for i in sel.subset.tolist())


# ------------------------------------------------------------------ registry and parameters


def test_registered_names():
    assert set(SELECTORS.names()) >= {"dds", "dynamic-random", "full", "random", "stream"}
    assert SELECTORS.get("dds") is DDSSelector
    assert SELECTORS.get("dynamic-random") is DynamicRandomSelector


def test_unknown_name_lists_allowed(data):
    with pytest.raises(UnknownNameError) as err:
        make_selector("ddss", *data[:2])
    for name in ("dds", "dynamic-random", "full", "random"):
        assert name in str(err.value)


def test_unknown_parameter_lists_allowed(data):
    with pytest.raises(TypeError, match="hardnes.*allowed:.*hardness"):
        make("dynamic-random", data, hardnes=0.9)


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"hardness": 1.5}, r"hardness must be a number in \(0, 1\], got 1.5"),
        ({"hardness": 0}, r"hardness .* got 0"),
        ({"mastery": -0.1}, r"mastery must be a number in \(0, 1\], got -0.1"),
        ({"mastery": True}, r"mastery .* got True"),
        ({"warmup_epochs": -1}, r"warmup_epochs must be an integer >= 0, got -1"),
        ({"warmup_epochs": 2.5}, r"warmup_epochs .* got 2.5"),
        ({"curriculum_stages": 5}, r"curriculum_stages=5 needs total_epochs"),
        ({"curriculum_stages": 5, "total_epochs": 0}, r"total_epochs must be an integer >= 1, got 0"),
        ({"subset_size": 501}, r"subset_size 501 is larger than the number of training images 500"),
        ({"subset_size": 9}, r"subset_size 9 is smaller than the number of classes 10"),
        ({"subset_size": None}, r"subset_size is required"),
        ({"seed": -3}, r"seed must be an integer >= 0, got -3"),
    ],
)
@pytest.mark.parametrize("name", ["dds", "dynamic-random"])
def test_bad_parameters_are_named(data, name, kw, match):
    with pytest.raises(ValueError, match=match):
        make(name, data, **kw)


def test_random_rejects_bad_subset_size(data):
    with pytest.raises(ValueError, match="subset_size 9 is smaller than the number of classes 10"):
        make("random", data, subset_size=9)
    with pytest.raises(ValueError, match="subset_size 600 is larger .* 500"):
        make("random", data, subset_size=600)


def test_dds_requires_a_matching_index(data):
    ids, labels, latents = data
    with pytest.raises(TypeError, match="FurthestIndex"):
        make("dds", data, index="exact")
    partial = ExactFurthest(ids[:-1], latents[:-1], labels[:-1])
    with pytest.raises(ValueError, match=f"missing training ids \\[{ids[-1]}\\]"):
        make("dds", data, index=partial)
    wrong = labels.copy()
    wrong[0] = (wrong[0] + 1) % N_CLASSES
    with pytest.raises(ValueError, match=f"labels differ .* \\[{ids[0]}\\]"):
        make("dds", data, index=ExactFurthest(ids, latents, wrong))


def test_bad_training_set():
    with pytest.raises(ValueError, match=r"unique; repeated: \[3\]"):
        make_selector("full", [1, 2, 3, 3], [0, 0, 1, 1])
    with pytest.raises(ValueError, match="same length"):
        make_selector("full", [1, 2, 3], [0, 1])


# ------------------------------------------------------------------ full and random


def test_full_trains_on_everything_in_a_fresh_order(data):
    ids = data[0]
    sel = make("full", data, subset_size=7)  # ignored
    orders = [step(sel).ids for _ in range(3)]
    for order in orders:
        assert order.dtype == np.int64
        assert np.array_equal(np.sort(order), np.sort(ids))
    assert not np.array_equal(orders[0], orders[1])
    assert sel.images_processed == 3 * len(ids)
    assert sel.subset_updates == 0 and sel.history[-1]["subset"] is None


def test_random_subset_is_static_balanced_and_seeded(data):
    labels_by_id = dict(zip(data[0].tolist(), data[1].tolist()))
    sel = make("random", data, subset_size=105)
    subset = sel.subset
    counts = class_counts(sel, labels_by_id)
    assert len(subset) == 105 == len(set(subset.tolist()))
    assert len(counts) == N_CLASSES and max(counts.values()) - min(counts.values()) <= 1
    plans = [step(sel) for _ in range(3)]
    for plan in plans:
        assert np.array_equal(np.sort(plan.ids), subset) and plan.train and not plan.updated
    assert not np.array_equal(plans[0].ids, plans[1].ids)  # a fresh permutation each epoch
    assert np.array_equal(make("random", data, subset_size=105).subset, subset)
    assert not np.array_equal(make("random", data, subset_size=105, seed=1).subset, subset)


def test_balanced_subset_gives_a_small_class_everything():
    ids = np.arange(100)
    labels = np.array([0] * 3 + [1] * 47 + [2] * 50)
    for size in (30, 61, 95):
        chosen = balanced_subset(ids, labels, size, np.random.default_rng(0))
        counts = np.bincount(labels[chosen], minlength=3)
        assert len(set(chosen.tolist())) == size == counts.sum()
        assert counts[0] == 3  # took all of the small class
        assert abs(int(counts[1]) - int(counts[2])) <= 1


# ------------------------------------------------------------------ the dynamic policies


def run_checked(sel, data, epochs, learn=learner):
    """Drive ``sel`` and check every invariant of the DDS loop at every epoch."""
    ids, labels, latents = data
    labels_by_id = dict(zip(ids.tolist(), labels.tolist()))
    latent_by_id = dict(zip(ids.tolist(), latents))
    initial_counts = class_counts(sel, labels_by_id)
    observed = 0
    previous = None
    for _ in range(epochs):
        before = sel.subset.tolist()
        scores = sel.scores()
        plan = sel.next_epoch()
        record = sel.history[-1]
        after = sel.subset.tolist()

        assert len(after) == len(set(after)) == sel.subset_size
        assert class_counts(sel, labels_by_id) == initial_counts
        if plan.epoch < sel.warmup_epochs:
            assert plan.train
        if previous is not None and previous.updated:
            assert plan.train  # the epoch after an update always trains
        expected_update = (
            previous is not None
            and previous.train
            and previous.epoch + 1 >= sel.warmup_epochs
            and sel.history[-2]["train_accuracy"] >= sel.history[-2]["mastery_threshold"]
        )
        if expected_update and record["noop_update"]:  # nothing easy to swap: trains instead
            assert plan.train and not plan.updated and not [i for i in before if scores.get(i, 0.0) > sel.hardness]
            expected_update = False
        assert plan.updated == expected_update == (not plan.train)

        if plan.updated:
            assert len(plan.ids) == 0
            easy = sorted(i for i in before if scores.get(i, 0.0) > sel.hardness)
            hard = set(before) - set(easy)
            assert hard <= set(after)  # hard images kept
            swaps = record["swaps"]
            assert [old for old, _ in swaps] == easy  # ascending ids, none left out here
            assert plan.replaced == len(swaps) == record["replaced"]
            assert set(after) == (set(before) - set(easy)) | {new for _, new in swaps}
            exclude = set(before)
            for old, new in swaps:
                assert labels_by_id[new] == labels_by_id[old] and new not in exclude
                pool = [i for i in ids.tolist() if labels_by_id[i] == labels_by_id[old] and i not in exclude]
                if type(sel) is DDSSelector:  # the furthest same-class image outside the subset
                    d2 = [float(np.sum((latent_by_id[i] - latent_by_id[old]) ** 2)) for i in pool]
                    assert new == pool[int(np.argmax(d2))]
                elif sel.name == "dds-coverage":  # the candidate furthest from its nearest class member
                    members = [i for i in exclude if labels_by_id[i] == labels_by_id[old]]
                    typical = set(sel._typical[labels_by_id[old]].tolist())
                    gap = {i: min(float(np.sum((latent_by_id[i] - latent_by_id[m]) ** 2)) for m in members)
                           for i in pool if i in typical}
                    assert new == max(gap, key=gap.get)
                exclude.add(new)
        else:
            assert after == before
            assert np.array_equal(np.sort(plan.ids), np.asarray(after))
            conf, correct = learn(plan.ids, plan.epoch)
            sel.observe(plan.ids, conf, correct)
            observed += len(plan.ids)
            assert record["train_accuracy"] == pytest.approx(np.mean(correct))
        assert sel.images_processed == observed
        previous = plan
    return sel


@pytest.mark.parametrize("name", ["dds", "dds-coverage", "dynamic-random"])
def test_dynamic_invariants_hold_through_a_run(data, name):
    sel = run_checked(make(name, data), data, epochs=20)
    updates = [r["epoch"] for r in sel.history if r["updated"]]
    assert sel.subset_updates == len(updates) >= 4  # the run really exercised updates
    assert sum(r["replaced"] for r in sel.history) > 20
    assert all(r["train"] for r in sel.history[:2])  # the warm-up (2 epochs) always trains
    json.dumps(sel.history)


def test_warmup_epochs_always_train_even_when_mastered(data):
    always_right = lambda ids, epoch: (np.full(len(ids), 0.99), np.ones(len(ids), bool))
    sel = make("dds", data, warmup_epochs=4)
    plans = [step(sel, always_right) for _ in range(8)]
    assert [p.train for p in plans] == [True] * 4 + [False, True, False, True]
    assert all(r["mastered"] for r in sel.history if r["train"])
    # every image is easy, so the update replaces the whole subset
    assert plans[4].replaced == sel.subset_size


def test_curriculum_order_easiest_first_then_newcomers(data):
    sel = make("dds", data)
    first = step(sel)
    # nothing scored yet: the order the images joined (a random, class-mixed order)
    assert np.array_equal(first.ids, sel.state_dict()["policy_state"]["members"])
    assert len(set(data[1][np.isin(data[0], first.ids[:20])].tolist())) > 3  # classes mixed
    while True:
        plan = step(sel)
        if plan.updated:
            break
    plan = sel.next_epoch()
    scores = sel.scores()
    scored = [i for i in plan.ids.tolist() if i in scores]
    assert scored == sorted(scored, key=lambda i: (-scores[i], i))
    newcomers = [new for _, new in sel.history[-2]["swaps"]]
    tail = plan.ids[len(scored):].tolist()
    assert sorted(tail) == sorted(newcomers) and len(tail) > 0


def test_curriculum_raises_the_threshold(data):
    sel = make("dds", data, mastery=0.5, curriculum_stages=5, total_epochs=20)
    # stages of 4 epochs: 0.5, 0.5*1.35, 0.5*1.7, then 0.5*2.05 and 0.5*2.4 capped at 1.0
    expected = [0.5] * 4 + [0.675] * 4 + [0.85] * 4 + [1.0] * 8
    assert [sel.mastery_threshold(e) for e in range(20)] == pytest.approx(expected)
    assert sel.mastery_threshold(40) == pytest.approx(1.0)  # past total_epochs: the last stage

    # a learner right on 70% of the images masters 0.5 and 0.675 but not 0.85 (stage 2, epoch 8+)
    for _ in range(20):
        step(sel, lambda ids, e: learner(ids, e, accuracy=0.7))
    thresholds = [r["mastery_threshold"] for r in sel.history if r["train"]]
    assert thresholds == sorted(thresholds) and thresholds[-1] > thresholds[0]
    updates = [r["epoch"] for r in sel.history if r["updated"]]
    assert updates and max(updates) <= 9
    fixed = make("dds", data, mastery=0.5)
    for _ in range(20):
        step(fixed, lambda ids, e: learner(ids, e, accuracy=0.7))
    assert max(r["epoch"] for r in fixed.history if r["updated"]) > 9


def test_replacement_none_keeps_the_easy_image():
    ids = np.arange(20)
    labels = ids % 2
    latents = np.random.default_rng(0).normal(size=(20, 3))
    sel = DDSSelector(ids, labels, index=ExactFurthest(ids, latents, labels), subset_size=20, warmup_epochs=0)
    easy = lambda ids, epoch: (np.full(len(ids), 0.95), np.ones(len(ids), bool))
    step(sel, easy)
    plan = step(sel, easy)
    # an update that swaps nothing is no update: the epoch trains instead
    assert plan.train and not plan.updated and plan.replaced == 0 and sel.subset_updates == 0
    assert sel.history[-1]["noop_update"] and sel.history[-1]["n_easy"] == 20
    assert sel.subset.tolist() == ids.tolist()


def test_faulty_index_is_caught(data):
    ids, labels, latents = data

    class WrongClass(FurthestIndex):
        def furthest(self, query_id, exclude=()):
            row = self.row_of(query_id)
            return int(self.ids[np.flatnonzero(self.labels != self.labels[row])[0]])

    always_right = lambda ids, epoch: (np.full(len(ids), 0.99), np.ones(len(ids), bool))
    sel = make("dds", data, index=WrongClass(ids, latents, labels), warmup_epochs=0)
    step(sel, always_right)
    with pytest.raises(RuntimeError, match="is not of the same class"):
        sel.next_epoch()


# ------------------------------------------------------------------ observe()


def test_observe_rejects_what_was_not_planned(data):
    sel = make("dds", data)
    with pytest.raises(RuntimeError, match="before the first next_epoch"):
        sel.observe([1], [0.5], [True])
    plan = sel.next_epoch()
    outsider = int(np.setdiff1d(data[0], plan.ids)[0])
    with pytest.raises(ValueError, match=f"not in epoch 0's plan: \\[{outsider}\\]"):
        sel.observe([plan.ids[0], outsider], [0.5, 0.5], [True, False])
    with pytest.raises(ValueError, match=r"confidence must lie in \[0, 1\]"):
        sel.observe(plan.ids[:2], [0.5, 1.5], [True, True])
    with pytest.raises(ValueError, match="same length"):
        sel.observe(plan.ids[:2], [0.5], [True, True])
    assert sel.images_processed == 0  # nothing counted from rejected calls


def test_observe_on_an_update_epoch_is_an_error(data):
    always_right = lambda ids, epoch: (np.full(len(ids), 0.99), np.ones(len(ids), bool))
    sel = make("dynamic-random", data, warmup_epochs=0)
    plan = step(sel, always_right)
    update = sel.next_epoch()
    assert update.updated and not update.train
    with pytest.raises(ValueError, match="subset-update epoch"):
        sel.observe(plan.ids[:1], [0.9], [True])


def test_images_processed_counts_every_observed_id(data):
    sel = make("random", data)
    plan = sel.next_epoch()
    sel.observe(plan.ids[:30], np.full(30, 0.5), np.ones(30, bool))
    again = np.r_[plan.ids[:10], plan.ids[:2]]  # repeats still cost compute
    sel.observe(again, np.full(12, 0.5), np.zeros(12, bool))
    assert sel.images_processed == 42
    assert sel.history[-1]["n_observed"] == 30
    assert sel.history[-1]["train_accuracy"] == pytest.approx(20 / 30)  # latest result per image


# ------------------------------------------------------------------ determinism and resume


@pytest.mark.parametrize("name", ["full", "stream", "random", "entropy", "dynamic-random", "dds", "dds-coverage"])
def test_same_seed_same_plans(data, name):
    a, b = make(name, data, seed=5), make(name, data, seed=5)
    for _ in range(15):
        assert same_plan(step(a), step(b))
    assert a.history == b.history


@pytest.mark.parametrize("name", ["random", "stream", "entropy", "dynamic-random", "dds"])
def test_different_seed_different_initial_subset(data, name):
    assert not np.array_equal(make(name, data, seed=0).subset, make(name, data, seed=1).subset)


def test_dds_coverage_swaps_in_the_worst_covered_typical_image(data):
    """Replacements never come from a class's outliers (beyond the quantile of distance to its centroid);
    that each is the worst-covered candidate is checked update by update in run_checked."""
    ids, labels, latents = data
    sel = make("dds-coverage", data, coverage_quantile=0.8)
    label_of = dict(zip(ids.tolist(), labels.tolist()))
    vector = dict(zip(ids.tolist(), latents))
    for _ in range(2):
        step(sel)
    before = set(sel.subset.tolist())
    plan = step(sel)
    assert plan.updated and plan.replaced > 0
    added = [i for i in sel.subset.tolist() if i not in before]
    for c in {label_of[i] for i in added}:
        members = [i for i in ids.tolist() if label_of[i] == c]
        points = np.array([vector[i] for i in members])
        distance = np.linalg.norm(points - points.mean(axis=0), axis=1)
        typical = {i for i, d in zip(members, distance) if d <= np.quantile(distance, 0.8)}
        assert all(i in typical for i in added if label_of[i] == c)
    assert make("dds-coverage", data).params()["coverage_quantile"] == 0.9
    with pytest.raises(ValueError, match="coverage_quantile"):
        make("dds-coverage", data, coverage_quantile=0)


def test_dds_coverage_first_pick_is_the_greedy_k_center(data):
    ids, labels, latents = data
    sel = make("dds-coverage", data, coverage_quantile=1.0)
    subset = set(sel.subset.tolist())
    easy = sorted(subset)[0]
    pick = sel.replacement(easy, set(subset))
    c = labels[ids == easy][0]
    vector = dict(zip(ids.tolist(), latents))
    members = [i for i in ids[labels == c].tolist() if i in subset]
    candidates = [i for i in ids[labels == c].tolist() if i not in subset]
    gap = {i: min(np.sum((vector[i] - vector[m]) ** 2) for m in members) for i in candidates}
    assert pick == max(gap, key=gap.get)


def test_dynamic_random_differs_from_dds_only_in_the_replacement(data):
    dds, rnd = make("dds", data), make("dynamic-random", data)
    assert np.array_equal(dds.subset, rnd.subset)
    for _ in range(2):  # the warm-up (2 epochs): identical plans
        assert same_plan(step(dds), step(rnd))
    a, b = step(dds), step(rnd)
    assert a.updated and b.updated and a.replaced == b.replaced
    assert not np.array_equal(dds.subset, rnd.subset)


@pytest.mark.parametrize("name", ["full", "stream", "random", "entropy", "dynamic-random", "dds", "dds-coverage"])
@pytest.mark.parametrize("mid_epoch", [False, True])
def test_state_dict_round_trip_continues_identically(data, name, mid_epoch):
    reference = make(name, data, seed=3)
    for _ in range(7):
        step(reference)
    if mid_epoch:  # saved between two batches of an epoch
        plan = reference.next_epoch()
        conf, correct = learner(plan.ids, plan.epoch)
        reference.observe(plan.ids[:5], conf[:5], correct[:5])
    state = json.loads(json.dumps(reference.state_dict()))
    resumed = make(name, data, seed=3)
    resumed.load_state_dict(state)
    assert resumed.state_dict() == state
    if mid_epoch:
        for sel in (reference, resumed):
            sel.observe(plan.ids[5:], conf[5:], correct[5:])
    for _ in range(12):
        assert same_plan(step(reference), step(resumed))
    assert reference.history == resumed.history
    assert reference.images_processed == resumed.images_processed
    assert reference.subset_updates == resumed.subset_updates
    assert reference.epoch == resumed.epoch == (19 if mid_epoch else 18)
    if name in ("dds", "dds-coverage", "dynamic-random"):
        assert reference.subset_updates > 0


def test_state_dict_is_a_snapshot(data):
    sel = make("dds", data)
    step(sel)
    state = sel.state_dict()
    frozen = json.dumps(state)
    for _ in range(10):
        step(sel)
    assert json.dumps(state) == frozen


def test_load_state_dict_refuses_a_different_setup(data):
    state = make("dds", data).state_dict()
    with pytest.raises(ValueError, match="from selector 'dds'"):
        make("dynamic-random", data).load_state_dict(state)
    with pytest.raises(ValueError, match="hardness=0.9 .* hardness=0.8"):
        make("dds", data, hardness=0.8).load_state_dict(state)
    ids, labels, latents = data
    other = (ids[:-1], labels[:-1], latents[:-1])
    with pytest.raises(ValueError, match="different training set"):
        make("dds", other).load_state_dict(state)


@pytest.mark.parametrize("name", ["dds", "dynamic-random"])
def test_history_keeps_one_hardness_histogram_per_trained_epoch(data, name):
    from frugalnas.selection.dynamic import HARDNESS_BINS, hardness_scores

    sel = make(name, data)
    plan = sel.next_epoch()
    conf, correct = learner(plan.ids, plan.epoch)
    half = len(plan.ids) // 2
    sel.observe(plan.ids[:half], conf[:half], correct[:half])
    assert "hardness_histogram" not in sel.history[-1]  # not per batch: the epoch is not done yet
    sel.observe(plan.ids[half:], conf[half:], correct[half:])
    histogram = sel.history[-1]["hardness_histogram"]
    expected = np.histogram(hardness_scores(conf, correct), bins=HARDNESS_BINS, range=(0.0, 1.0))[0]
    assert histogram == expected.tolist() and sum(histogram) == len(plan.ids)
    for _ in range(6):
        plan = step(sel)
        assert ("hardness_histogram" in sel.history[-1]) == bool(plan.train)
