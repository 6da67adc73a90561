"""Selectors for compute-matched comparisons (stream, entropy) and the DDS repairs, on synthetic
data with the simulated learner of test_selectors."""
from __future__ import annotations

import json

import numpy as np
import pytest

from frugalnas.selection import make_selector

from test_selectors import N_CLASSES, PER_CLASS, data, learner, make, step  # noqa: F401  (data is a fixture)

N = N_CLASSES * PER_CLASS


# ------------------------------------------------------------------ stream


@pytest.mark.parametrize("size", [70, 100, 500, None])
def test_stream_never_repeats_an_image_before_a_full_pass(data, size):
    ids = data[0]
    sel = make("stream", data, subset_size=size, seed=3)
    plans = [step(sel).ids for _ in range(23)]
    assert all(len(p) == (size or N) for p in plans)
    stream = np.concatenate(plans)
    for k in range(len(stream) // N):
        assert np.array_equal(np.sort(stream[k * N:(k + 1) * N]), np.sort(ids)), f"pass {k}"
    # each pass in a new order, and the epoch length does not change the stream
    assert not np.array_equal(stream[:N], stream[N:2 * N])
    other = np.concatenate([step(s).ids for s in [make("stream", data, subset_size=50, seed=3)] for _ in range(60)])
    assert np.array_equal(other[:len(stream)], stream[:len(other)])
    assert sel.history[-1]["stream_pass"] == (len(stream) - 1) // N


def test_stream_subset_is_the_epochs_images(data):
    sel = make("stream", data, subset_size=40, seed=0)
    first = sel.subset
    plan = step(sel)
    assert np.array_equal(first, np.sort(plan.ids)) and np.array_equal(sel.subset, np.sort(plan.ids))
    assert sel.history[-1]["subset"] is None and sel.history[-1]["subset_size"] == 40


def test_stream_bad_sizes(data):
    with pytest.raises(ValueError, match="subset_size 501 .* larger than the number of training images 500"):
        make("stream", data, subset_size=501)
    with pytest.raises(ValueError, match="subset_size must be an integer >= 1"):
        make("stream", data, subset_size=0)


def test_stream_checkpoint_holds_a_generator_state_not_the_pass(data):
    sel = make("stream", data, subset_size=300)
    step(sel), step(sel)
    state = sel.state_dict()
    assert len(json.dumps(state["policy_state"])) < 1000
    resumed = make("stream", data, subset_size=300)
    resumed.load_state_dict(json.loads(json.dumps(state)))
    for _ in range(5):
        assert np.array_equal(step(sel).ids, step(resumed).ids)


# ------------------------------------------------------------------ entropy (Na et al. 2021)


def test_entropy_histogram_follows_the_papers_rule():
    from frugalnas.selection.entropy import entropy_histogram

    # log10 entropies: 3 in [-3, -2.5), none in [-2.5, -2), 1 in [-2, -1.5), 6 in [-0.5, 0)
    logs = np.array([-2.9, -2.8, -2.6, -1.7] + [-0.4, -0.3, -0.3, -0.2, -0.1, -0.05])
    h = entropy_histogram(10 ** logs, bin_width=0.5)
    np.testing.assert_allclose(h["edges"], [-3, -2.5, -2, -1.5, -1, -0.5, 0])
    assert h["counts"].tolist() == [3, 0, 1, 0, 0, 6]
    weight = np.array([6 - 3 + 1, 0, 6 - 1 + 1, 0, 0, 6 - 6 + 1])
    np.testing.assert_allclose(h["probability"], weight / weight.sum())
    assert h["bin"].tolist() == [0, 0, 0, 2] + [5] * 6
    # a zero entropy is floored, not -inf
    assert np.isfinite(entropy_histogram(np.array([0.0, 0.5]))["edges"]).all()
    with pytest.raises(ValueError, match="finite and >= 0"):
        entropy_histogram(np.array([0.1, -1.0]))


def test_entropy_sampling_weights_each_image_by_its_bin_probability_over_its_count():
    from frugalnas.selection.entropy import entropy_histogram, entropy_sample

    rng = np.random.default_rng(0)
    entropy = 10 ** rng.normal(-1.5, 0.8, size=300)
    ids = np.arange(1000, 1300)
    h = entropy_histogram(entropy)
    expected = h["probability"][h["bin"]] / h["counts"][h["bin"]]

    class Spy:  # records the weights the sampler draws with
        def choice(self, n, size, replace, p):
            self.n, self.size, self.replace, self.p = n, size, replace, p
            return np.arange(size)

    spy = Spy()
    entropy_sample(ids, entropy, 40, spy)
    assert (spy.n, spy.size, spy.replace) == (300, 40, False)
    np.testing.assert_allclose(spy.p, expected / expected.sum())
    # and the real draw follows it: frequencies of single draws per bin against the bin probabilities
    draws = np.array([h["bin"][np.searchsorted(ids, entropy_sample(ids, entropy, 1, np.random.default_rng(s))[0][0])]
                      for s in range(3000)])
    freq = np.bincount(draws, minlength=len(h["counts"])) / len(draws)
    np.testing.assert_allclose(freq, h["probability"], atol=0.03)
    # the rare tails are over-weighted: per image, the least crowded non-empty bin beats the most crowded
    assert expected[h["bin"] == h["counts"].argmax()].max() < expected.max()


def test_entropy_selector_is_static_seeded_and_checked_on_resume(data):
    ids, labels, _ = data
    sel = make("entropy", data, subset_size=80, seed=4)
    subset = sel.subset
    assert len(subset) == 80 and len(np.unique(subset)) == 80
    for _ in range(3):
        plan = step(sel)
        assert np.array_equal(np.sort(plan.ids), subset)
    assert sum(sel.histogram["selected"]) == 80 and sum(sel.histogram["counts"]) == N
    assert np.array_equal(make("entropy", data, subset_size=80, seed=4).subset, subset)
    state = sel.state_dict()
    other_scores = (ids, np.linspace(0.01, 1, len(ids)))
    with pytest.raises(ValueError, match="entropy_fingerprint"):
        make("entropy", data, subset_size=80, seed=4, entropy=other_scores).load_state_dict(state)


def test_entropy_selector_bad_input(data):
    ids, labels, _ = data
    with pytest.raises(ValueError, match=r"lack 1 training image\(s\)"):
        make("entropy", data, entropy=(ids[1:], np.ones(len(ids) - 1)))
    with pytest.raises(ValueError, match="subset_size is required"):
        make("entropy", data, subset_size=None)
    with pytest.raises(ValueError, match="bin_width must be a number > 0"):
        make("entropy", data, bin_width=0)
    with pytest.raises(TypeError, match="required keyword-only argument: .entropy"):
        make_selector("entropy", ids, labels, subset_size=10)
    # scores of a larger set (e.g. the whole training split for the DARTS weight half) are fine
    extra = (np.concatenate([ids, [1, 2]]), np.concatenate([10 ** (-3 * np.ones(len(ids))), [0.5, 0.6]]))
    assert len(make("entropy", data, entropy=extra).subset) == 100


def test_policy_needs():
    from frugalnas.selection.factory import needs_entropy, needs_latents, policy_needs

    assert policy_needs("dds") == ("latents",) and needs_latents("dds") and not needs_entropy("dds")
    assert policy_needs("entropy") == ("entropy",) and needs_entropy("entropy") and not needs_latents("entropy")
    for name in ("full", "stream", "random", "dynamic-random"):
        assert policy_needs(name) == ()


# ------------------------------------------------------------------ DDS repairs


@pytest.mark.parametrize("name", ["dds", "dynamic-random"])
def test_an_update_that_would_swap_nothing_trains_instead(data, name):
    right_but_unsure = lambda ids, epoch: (np.full(len(ids), 0.5), np.ones(len(ids), bool))  # mastered, none easy
    sel = make(name, data, warmup_epochs=2)
    plans = [step(sel, right_but_unsure) for _ in range(8)]
    assert all(p.train and not p.updated for p in plans)
    assert sel.subset_updates == 0 and sel.images_processed == 8 * 100
    assert [r["noop_update"] for r in sel.history] == [False, False] + [True] * 6


def test_noop_updates_cost_no_epoch_and_no_lr_restart_in_the_trainer(digits_dataset):
    import torch

    from frugalnas.data import open_dataset
    from frugalnas.data.torch_dataset import ImageSplit
    from frugalnas.train import SelectorTrainer, TrainSettings, build_arch

    torch.set_num_threads(1)
    train = ImageSplit(open_dataset(digits_dataset), "train")
    torch.manual_seed(0)
    model, _ = build_arch("baseline:cnn", 10, 1)
    # hardness 1.0: no image can be easy, and mastery 0.1 is reached at once: every update is a no-op
    sel = make_selector("dynamic-random", train.ids, train.labels, subset_size=50, warmup_epochs=1, mastery=0.1,
                        hardness=1.0)
    trainer = SelectorTrainer(model, train, sel, TrainSettings(epochs=5, batch_size=25))
    results = [trainer.run_epoch() for _ in range(5)]
    assert all(r.trained and r.images == 50 for r in results)
    assert trainer.images_processed == 250 and trainer.cycle_start == 0
    assert [h["noop_update"] for h in sel.history] == [False] + [True] * 4


@pytest.mark.parametrize("order", ["blocks", "shuffled"])
def test_orders_shuffle_within_the_curriculum(data, order):
    from frugalnas.selection.dynamic import CURRICULUM_BLOCKS

    strict, mixed = make("dds", data, seed=1), make("dds", data, seed=1, order=order)
    for _ in range(3):  # the warm-up: same scores, so the same curriculum underneath
        a, b = step(strict), step(mixed)
        assert sorted(a.ids.tolist()) == sorted(b.ids.tolist())
    a, b = strict.next_epoch(), mixed.next_epoch()
    assert not np.array_equal(a.ids, b.ids)
    if order == "blocks":
        for block_a, block_b in zip(np.array_split(a.ids, CURRICULUM_BLOCKS), np.array_split(b.ids, CURRICULUM_BLOCKS)):
            assert sorted(block_a.tolist()) == sorted(block_b.tolist()) and not np.array_equal(block_a, block_b)
    again = make("dds", data, seed=1, order=order)
    for _ in range(3):
        step(again)
    assert np.array_equal(again.next_epoch().ids, b.ids)  # seeded


def test_easy_quantile_adapts_the_threshold_to_the_subset(data):
    sel = make("dds", data, easy_quantile=0.8, warmup_epochs=1, mastery=0.5)
    plan = step(sel)
    scores = sel.scores()
    threshold = np.quantile([scores[i] for i in sel.subset.tolist()], 0.8)
    record = sel.history[-1]
    assert record["easy_threshold"] == pytest.approx(threshold)
    expected_easy = sorted(i for i in plan.ids.tolist() if scores[i] > threshold)
    assert record["n_easy"] == len(expected_easy) == 20  # the easiest fifth of 100
    update = sel.next_epoch()
    assert update.updated and [old for old, _ in sel.history[-1]["swaps"]] == expected_easy
    # the fixed threshold on the same learner: fewer easy images (~7.5% expected; 11 with this seed)
    fixed = make("dds", data, warmup_epochs=1, mastery=0.5)
    step(fixed)
    assert fixed.history[-1]["n_easy"] < 15


def test_easy_fraction_mastery(data):
    sure = lambda ids, epoch: (np.where(np.arange(len(ids)) % 4 == 0, 0.95, 0.5), np.ones(len(ids), bool))
    sel = make("dds", data, mastery_rule="easy-fraction", mastery=0.3, warmup_epochs=1)
    step(sel, sure)  # a quarter easy: accuracy 1.0 would master, the easy fraction 0.25 < 0.3 does not
    assert sel.history[-1]["n_easy"] == 25 and sel.history[-1]["mastered"] is False
    assert step(sel, sure).train
    loose = make("dds", data, mastery_rule="easy-fraction", mastery=0.25, warmup_epochs=1)
    step(loose, sure)
    assert loose.history[-1]["mastered"] is True and step(loose, sure).updated


@pytest.mark.parametrize("kw, match", [
    ({"order": "hardest-first"}, "order must be one of curriculum, blocks, shuffled"),
    ({"easy_quantile": 1.0}, "easy_quantile must be below 1"),
    ({"easy_quantile": 0}, r"easy_quantile must be a number in \(0, 1\]"),
    ({"mastery_rule": "loss"}, "mastery_rule must be one of accuracy, easy-fraction"),
    ({"mastery_rule": "easy-fraction", "easy_quantile": 0.8}, "needs the fixed easy threshold"),
])
def test_bad_repair_parameters(data, kw, match):
    with pytest.raises(ValueError, match=match):
        make("dynamic-random", data, **kw)
