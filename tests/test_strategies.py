"""Search strategies (ask/tell): registry and parameters, objectives, no repeats, exhaustion,
checkpoint round trips, constraints, multi-objective fronts, bad input."""
from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch

from frugalnas.errors import ConfigError
from frugalnas.registry import UnknownNameError
from frugalnas.spaces import load_space
from frugalnas.strategies import STRATEGIES, make_strategy, non_dominated, pareto_front, parse_objectives

torch.set_num_threads(1)

ALL = ["evolution", "optuna-nsga2", "optuna-tpe", "predictor", "random", "rl"]
NO_REPEATS = ["random", "evolution", "predictor"]
# small settings so every strategy reaches its model-based phase within a few asks
FAST = {"evolution": {"population_size": 6, "sample_size": 3}, "predictor": {"n_initial": 4, "train_steps": 30},
        "optuna-tpe": {"n_startup_trials": 4}, "optuna-nsga2": {"population_size": 6}}


def n_convs(arch) -> int:
    return sum(op.startswith("nor_conv") for op in arch.ops)


def evaluate(landscape, arch) -> dict:
    """A cheap stand-in for training: the synthetic accuracy, and a parameter count that grows with convs."""
    return {"accuracy": landscape.mean_accuracy(arch.ops),
            "params": 1000.0 * n_convs(arch) + 10.0 * arch.ops.count("nor_conv_3x3")}


def drive(strategy, landscape, n: int, *, batch: int = 1) -> list[str]:
    """Ask ``batch`` architectures, tell their results, repeat until ``n`` were asked; the asked strings."""
    asked = []
    while len(asked) < n:
        archs = [strategy.ask() for _ in range(min(batch, n - len(asked)))]
        assert all(a is not None for a in archs)
        for arch in archs:
            strategy.tell(arch, evaluate(landscape, arch))
        asked += [str(a) for a in archs]
    return asked


# -- registry, parameters, objectives ------------------------------------------------------------

def test_registry_names_and_unknown_name(space):
    assert STRATEGIES.names() == ALL
    with pytest.raises(UnknownNameError, match="allowed: evolution, optuna-nsga2"):
        make_strategy("bayesian", space)


def test_unknown_parameter_lists_the_allowed_ones(space):
    with pytest.raises(ConfigError,
                       match=r"unknown parameter\(s\) populaton_size; allowed: population_size, sample_size, seed"):
        make_strategy("evolution", space, populaton_size=10)
    # a bad value is a ConfigError naming the strategy (the CLI exits 2 with it), and still a ValueError
    with pytest.raises(ConfigError, match=r"search strategy 'evolution': sample_size \(5\) must not exceed"):
        make_strategy("evolution", space, population_size=3, sample_size=5)
    with pytest.raises(ValueError, match="sample_size"):
        make_strategy("evolution", space, population_size=3, sample_size=5)
    with pytest.raises(ValueError, match="acquisition 'ei' is unknown; allowed: its, ucb"):
        make_strategy("predictor", space, acquisition="ei")


def test_objective_format():
    assert [(o.name, o.direction) for o in parse_objectives(["accuracy", "-params", "+flops"])] == [
        ("accuracy", "max"), ("params", "min"), ("flops", "max")]
    assert parse_objectives("accuracy")[0].name == "accuracy"
    with pytest.raises(ValueError, match="'-name' to minimise"):
        parse_objectives([("params", "min")])
    with pytest.raises(ValueError, match="at least one"):
        parse_objectives([])
    with pytest.raises(ValueError, match="more than once"):
        parse_objectives(["accuracy", "-accuracy"])
    with pytest.raises(ValueError, match="not a metric name"):
        parse_objectives(["val acc"])


def test_tell_checks_the_result_and_the_arch(space, landscape):
    strategy = make_strategy("random", space, objectives=["accuracy", "-params"])
    arch = strategy.ask()
    with pytest.raises(ValueError, match=r"no objective metric 'params'; it has: accuracy, loss"):
        strategy.tell(arch, {"accuracy": 0.9, "loss": 0.3})
    with pytest.raises(ValueError, match="must be a finite number"):
        strategy.tell(arch, {"accuracy": float("nan"), "params": 1.0})
    strategy.tell(arch, {"accuracy": 0.9, "params": 1e5})  # the failed tells did not lose the proposal
    with pytest.raises(ValueError, match="not awaiting a result"):
        strategy.tell(arch, {"accuracy": 0.9, "params": 1e5})
    other = strategy.ask()
    strategy.tell(other, None)  # a failed evaluation: not proposed again
    assert strategy.failed == 1 and len(strategy.history) == 1 and strategy.pending == []
    assert strategy.is_seen(other) and strategy.best()[0] == arch


# -- proposals -------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", NO_REPEATS)
def test_no_architecture_is_proposed_twice(space, landscape, name):
    strategy = make_strategy(name, space, seed=3, **FAST.get(name, {}))
    asked = drive(strategy, landscape, 60, batch=3)
    assert len(set(asked)) == len(asked) == 60


def test_evolution_mutates_the_population_after_the_random_start(space, landscape):
    strategy = make_strategy("evolution", space, seed=1, population_size=10, sample_size=3)
    drive(strategy, landscape, 30)
    assert len(strategy.population) == 10
    # after the first 10 (random) asks, every proposal is one mutation away from a living member
    history = [a for a, _ in strategy.history]
    for k in range(10, 30):
        assert min(sum(x != y for x, y in zip(history[k].ops, h.ops)) for h in history[k - 10:k]) == 1


@pytest.mark.parametrize("name", ["random", "evolution", "predictor"])
def test_small_space_is_exhausted_without_repeats(name, landscape):
    tiny = load_space("nb201", {"ops": ["none", "nor_conv_3x3"]})  # 2**6 = 64 cells
    strategy = make_strategy(name, tiny, seed=0, **FAST.get(name, {}))
    asked = []
    while (arch := strategy.ask()) is not None:
        asked.append(str(arch))
        strategy.tell(arch, evaluate(landscape, arch))
    assert len(asked) == len(set(asked)) == 64
    assert strategy.finished and strategy.ask() is None


@pytest.mark.parametrize("name", ["rl", "optuna-tpe"])
def test_repeating_strategies_reuse_known_results(name, landscape):
    tiny = load_space("nb201", {"ops": ["none", "nor_conv_3x3"]})
    strategy = make_strategy(name, tiny, seed=0, max_reuse=20, **FAST.get(name, {}))
    asked = drive(strategy, landscape, 40)
    # The policy proposes evaluated cells again; they are answered from the known result, and a cell
    # is evaluated twice only after max_reuse such answers within one ask (a converged policy).
    duplicates = len(asked) - len(set(asked))
    assert strategy.reused > 0
    assert duplicates * strategy.max_reuse <= strategy.reused
    plain = make_strategy(name, tiny, seed=0, max_reuse=0, **FAST.get(name, {}))
    asked = drive(plain, landscape, 40)
    assert plain.reused == 0 and len(set(asked)) < len(asked)


def test_rl_policy_moves_towards_good_ops(space, landscape):
    strategy = make_strategy("rl", space, seed=0)
    drive(strategy, landscape, 100)
    probabilities = np.array(strategy.probabilities())  # (edges, ops), ops in the space's order
    ops = space.choices()[0][1]
    # uniform is 0.2 each; the synthetic landscape rewards conv 3x3 most and punishes none
    assert probabilities.mean(axis=0).argmax() == ops.index("nor_conv_3x3")
    assert probabilities[:, ops.index("nor_conv_3x3")].mean() > 0.25
    assert probabilities[:, ops.index("none")].mean() < 0.15


# -- checkpoints -------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ALL)
def test_state_dict_round_trip_continues_identically(space, landscape, name):
    # constraints and a failed evaluation before the checkpoint, so rejected/failed paths are restored too
    params = {"seed": 5, "constraints": {"max_params": 3000}, "metrics_fn": lambda a: {"params": 1000 * n_convs(a)},
              **FAST.get(name, {})}

    reference = make_strategy(name, space, **params)
    drive(reference, landscape, 10, batch=2)
    reference.tell(reference.ask(), None)
    pending = [reference.ask(), reference.ask()]  # a checkpoint with results outstanding
    state = json.loads(json.dumps(reference.state_dict()))  # JSON types only
    for arch in pending:
        reference.tell(arch, evaluate(landscape, arch))
    expected = drive(reference, landscape, 12, batch=2)
    assert reference.rejected > 0 and reference.failed == 1

    restored = make_strategy(name, space, **params)
    restored.load_state_dict(state)
    assert restored.pending == pending
    for arch in restored.pending:
        restored.tell(arch, evaluate(landscape, arch))
    assert drive(restored, landscape, 12, batch=2) == expected
    assert restored.state_dict() == json.loads(json.dumps(reference.state_dict()))

    other = make_strategy(name, space, **{**params, "seed": 6})
    with pytest.raises(ValueError, match="saved with seed=5"):
        other.load_state_dict(state)


@pytest.mark.parametrize("name", ALL)
def test_pickled_strategy_continues_identically(space, landscape, name):
    # Ray Tune pickles the search algorithm with the Tuner (Optuna 5.1's NSGA-II sampler holds a lock)
    reference = make_strategy(name, space, seed=5, **FAST.get(name, {}))
    drive(reference, landscape, 10, batch=2)
    pending = [reference.ask(), reference.ask()]
    copy = pickle.loads(pickle.dumps(reference))
    for strategy in (reference, copy):
        for arch in pending:
            strategy.tell(arch, evaluate(landscape, arch))
    assert drive(copy, landscape, 12, batch=2) == drive(reference, landscape, 12, batch=2)


def test_same_seed_same_proposals_different_seed_different(space, landscape):
    for name in ["evolution", "rl", "predictor"]:
        a = drive(make_strategy(name, space, seed=1, **FAST.get(name, {})), landscape, 12)
        b = drive(make_strategy(name, space, seed=1, **FAST.get(name, {})), landscape, 12)
        c = drive(make_strategy(name, space, seed=2, **FAST.get(name, {})), landscape, 12)
        assert a == b != c


# -- constraints ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ALL)
def test_constraints_reject_before_ask_returns(space, landscape, name):
    checked = []

    def metrics_fn(arch):
        checked.append(arch)
        return {"params": 1000.0 * n_convs(arch)}

    strategy = make_strategy(name, space, seed=0, constraints={"max_params": 2000}, metrics_fn=metrics_fn,
                             **FAST.get(name, {}))
    for _ in range(25):
        arch = strategy.ask()
        assert n_convs(arch) <= 2  # never returned if it violates
        strategy.tell(arch, evaluate(landscape, arch))
    assert strategy.rejected > 0
    assert all(n_convs(a) > 2 for a in strategy._infeasible)
    assert set(checked) >= {a for a, _ in strategy.history}


def test_constraints_with_the_space_counting_params(landscape):
    small = load_space("nb201", {"network": {"channels": 4, "cells_per_stage": 1}})
    limit = small.count_params(small.parse("|none~0|+|none~0|none~1|+|skip_connect~0|none~1|nor_conv_1x1~2|"), 10, 3)
    strategy = make_strategy("random", small, seed=0, constraints={"max_params": limit}, num_classes=10, in_channels=3)
    for _ in range(5):
        arch = strategy.ask()
        assert small.count_params(arch, 10, 3) <= limit
        strategy.tell(arch, evaluate(landscape, arch))
    assert strategy.rejected > 0


def test_constraint_errors_name_the_culprit(space):
    with pytest.raises(ConfigError, match="'max_parameters'.*allowed without a metrics_fn: params, flops"):
        make_strategy("random", space, constraints={"max_parameters": 1e5})
    with pytest.raises(ConfigError, match="needs num_classes, in_channels"):
        make_strategy("random", space, constraints={"max_params": 1e5})
    with pytest.raises(ConfigError, match="'params<2e5' must be written 'max_<metric>'"):
        make_strategy("random", space, constraints={"params<2e5": 1})
    strategy = make_strategy("random", space, constraints={"max_latency": 3.0}, metrics_fn=lambda a: {"params": 1})
    with pytest.raises(ConfigError, match="metrics_fn returned no 'latency'; it returned: params"):
        strategy.ask()
    impossible = make_strategy("rl", space, constraints={"max_params": -1.0}, metrics_fn=lambda a: {"params": 0.0},
                               max_attempts=50)
    with pytest.raises(ConfigError, match="50 proposals in a row could not be used"):
        impossible.ask()


# -- multiple objectives ----------------------------------------------------------------------------------

def test_non_dominated_mask():
    points = np.array([[1.0, 1.0], [2.0, 0.0], [0.5, 0.5], [1.0, 1.0], [0.0, 2.0], [1.5, 0.5]])
    assert non_dominated(points).tolist() == [True, True, False, True, True, True]


@pytest.mark.parametrize("name", ["optuna-nsga2", "evolution", "optuna-tpe"])
def test_multi_objective_front_is_non_dominated(space, landscape, name):
    strategy = make_strategy(name, space, seed=0, objectives=["accuracy", "-params"], **FAST.get(name, {}))
    drive(strategy, landscape, 40)
    front = strategy.pareto_front()
    told = dict(strategy.history)

    def dominates(a, b):
        return (a["accuracy"] >= b["accuracy"] and a["params"] <= b["params"]
                and (a["accuracy"] > b["accuracy"] or a["params"] < b["params"]))

    assert 1 <= len(front) < len(told)
    for _, result in front:
        assert not any(dominates(other, result) for other in told.values())
    on_front = {arch for arch, _ in front}
    for arch, result in told.items():
        if arch not in on_front:
            assert any(dominates(r, result) for _, r in front)
    assert pareto_front(strategy.history, ["accuracy", "-params"]) == front


def test_predictor_acquisitions(space, landscape):
    its = make_strategy("predictor", space, seed=0, **FAST["predictor"])
    ucb = make_strategy("predictor", space, seed=0, acquisition="ucb", ucb_beta=2.0, **FAST["predictor"])
    a, b = drive(its, landscape, 12), drive(ucb, landscape, 12)
    assert a[:4] == b[:4] and a != b  # same random start, different acquisition
    mean, std = ucb.predict([space.parse(s) for s in b[:4]])
    assert mean.shape == std.shape == (4,) and (std > 0).all()
    # trained on the told results: the predicted ranking of what was evaluated follows the truth
    truth = [landscape.mean_accuracy(space.parse(s).ops) for s in b]
    mean, _ = ucb.predict([space.parse(s) for s in b])
    assert np.corrcoef(mean, truth)[0, 1] > 0.5
