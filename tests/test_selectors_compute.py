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
