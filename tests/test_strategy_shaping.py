"""Rank-based learning signals of rl (reward_shaping) and predictor (target): a strategy that learns
from ranks proposes the same architectures whatever monotone scale the metric is on, so a few
disconnected cells at chance accuracy cannot drown the differences among the good ones."""
from __future__ import annotations

import math

import pytest
import torch

from frugalnas.strategies import make_strategy
from frugalnas.strategies.synthetic import nb201_like_table

torch.set_num_threads(1)
TABLE = nb201_like_table(seed=0)


def proposals(name: str, transform, budget: int = 30, **params) -> list[str]:
    strategy = make_strategy(name, "nb201", seed=2, **params)
    seen = []
    for _ in range(budget):
        arch = strategy.ask()
        seen.append(str(arch))
        strategy.tell(arch, {"accuracy": transform(TABLE[str(arch)])})
    return seen


@pytest.mark.parametrize("name, params", [("rl", {"reward_shaping": "rank"}),
                                          ("predictor", {"target": "rank", "n_initial": 5, "train_steps": 30})])
def test_rank_signals_do_not_depend_on_the_metric_scale(name, params):
    plain = proposals(name, lambda x: x, **params)
    assert proposals(name, lambda x: math.exp(x / 5), **params) == plain  # a steep monotone rescaling
    assert proposals(name, lambda x: x / 100, **params) == plain          # accuracy as a fraction


def test_standardised_rewards_do_depend_on_it():
    plain = proposals("rl", lambda x: x, reward_shaping="standardize")
    assert proposals("rl", lambda x: math.exp(x / 5), reward_shaping="standardize") != plain


def test_unknown_signal_names_are_refused():
    with pytest.raises(ValueError, match="reward_shaping 'ranks' is unknown; allowed: rank, standardize"):
        make_strategy("rl", "nb201", reward_shaping="ranks")
    with pytest.raises(ValueError, match="target 'log' is unknown; allowed: rank, standardize"):
        make_strategy("predictor", "nb201", target="log")
