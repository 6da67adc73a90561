"""Surrogate screening (``screen``): each ask draws several proposals from the strategy and returns the
one a surrogate of the results so far predicts best; the rest are withdrawn, never evaluated."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from frugalnas.spaces import load_space
from frugalnas.strategies import make_strategy

torch.set_num_threads(1)

SCREENING = ["evolution", "optuna-nsga2", "optuna-tpe", "random", "rl"]


def result(landscape, arch) -> dict:
    return {"accuracy": landscape.mean_accuracy(arch.ops)}


def drive(strategy, landscape, n: int) -> list:
    asked = []
    for _ in range(n):
        arch = strategy.ask()
        strategy.tell(arch, result(landscape, arch))
        asked.append(arch)
    return asked


@pytest.mark.parametrize("name", SCREENING)
def test_ask_returns_the_surrogates_favourite_of_the_strategys_proposals(space, landscape, name, monkeypatch):
    from frugalnas.strategies.surrogate import Surrogate

    strategy = make_strategy(name, space, seed=0, screen=4, screen_after=5)
    drive(strategy, landscape, 5)  # unscreened until screen_after results are known
    assert strategy.withdrawn == 0
    proposals: list = []
    original = strategy._propose
    monkeypatch.setattr(strategy, "_propose", lambda: proposals.append(original()) or proposals[-1])
    # a surrogate that predicts the true accuracy with no uncertainty: its Thompson draw is the truth
    truth = lambda self, history, archs: (np.array([result(landscape, a)["accuracy"] for a in archs]),  # noqa: E731
                                          np.zeros(len(archs)))
    monkeypatch.setattr(Surrogate, "predict", truth)
    for k in range(6):
        proposals.clear()
        arch = strategy.ask()
        usable = list(dict.fromkeys(p for p in proposals if p not in strategy._told))
        assert arch in usable and len(usable) == 4
        assert arch == max(usable, key=lambda a: result(landscape, a)["accuracy"])
        assert strategy.withdrawn == 3 * (k + 1) and strategy.pending == [arch]
        strategy.tell(arch, result(landscape, arch))


def test_withdrawn_proposals_are_not_seen_and_optuna_hears_of_them_as_failed(space, landscape):
    strategy = make_strategy("optuna-tpe", space, seed=1, screen=3, n_startup_trials=4)
    drive(strategy, landscape, 10)
    states = [t.state.name for t in strategy.study.trials]
    # a proposal of a told architecture is told its known result (COMPLETE), a withdrawn one fails
    assert states.count("COMPLETE") == 10 + strategy.reused and states.count("FAIL") == strategy.withdrawn == 2 * 5
    assert strategy.failed == 0 and strategy.infeasible == [] and strategy.pending == []
    evolution = make_strategy("evolution", space, seed=1, screen=3)
    drive(evolution, landscape, 8)
    assert evolution.withdrawn == 6 and evolution.infeasible == [] and len(evolution.history) == 8


@pytest.mark.parametrize("name", SCREENING)
def test_a_screened_search_resumes_exactly(space, landscape, name):
    params = {"seed": 4, "screen": 4, "screen_after": 3}
    reference = make_strategy(name, space, **params)
    drive(reference, landscape, 8)
    state = json.loads(json.dumps(reference.state_dict()))
    expected = [str(a) for a in drive(reference, landscape, 6)]
    restored = make_strategy(name, space, **params)
    restored.load_state_dict(state)
    assert [str(a) for a in drive(restored, landscape, 6)] == expected
    assert restored.withdrawn == reference.withdrawn


def test_screen_settings_are_checked_and_states_from_before_screening_load(space, landscape):
    with pytest.raises(ValueError, match="predictor chooses every proposal with its own model; screen must be 1"):
        make_strategy("predictor", space, screen=4)
    with pytest.raises(ValueError, match="screen must be an integer >= 1"):
        make_strategy("evolution", space, screen=0)
    with pytest.raises(ValueError, match="screen_after must be an integer >= 2"):
        make_strategy("evolution", space, screen_after=1)
    plain = make_strategy("evolution", space, seed=0, screen=1)
    drive(plain, landscape, 3)
    old = json.loads(json.dumps(plain.state_dict()))
    for key in ("screen", "screen_after"):  # a checkpoint written before screening existed
        del old["params"][key]
    del old["counters"]["withdrawn"], old["screen_model_size"]
    make_strategy("evolution", space, seed=0, screen=1).load_state_dict(old)
    with pytest.raises(ValueError, match="saved with screen=1 but this strategy has screen=8"):
        make_strategy("evolution", space, seed=0, screen=8).load_state_dict(old)


@pytest.mark.parametrize("name", ["evolution", "rl"])
def test_screening_finds_better_architectures_early(space, landscape, name):
    """On the synthetic NAS-Bench-201-like landscape, over the same 8 seeds, screening 8 proposals raises
    the mean best found after 25 evaluations (the budget where unscreened strategies trail)."""
    def mean_best(screen: int) -> float:
        best = []
        for seed in range(8):
            strategy = make_strategy(name, space, seed=seed, screen=screen)
            best.append(max(result(landscape, a)["accuracy"] for a in drive(strategy, landscape, 25)))
        return float(np.mean(best))

    assert mean_best(8) > mean_best(1) + 0.1


def test_a_converged_policy_does_not_spin_in_the_screen(landscape):
    tiny = load_space("nb201", {"ops": ["none", "nor_conv_3x3"]})  # 64 cells
    strategy = make_strategy("rl", tiny, seed=0, screen=8, lr=2.0, entropy_weight=0.0)
    drive(strategy, landscape, 60)  # repeats within a screen end it early instead of looping max_attempts
    assert len(strategy.history) == 60


def test_a_screened_ask_draws_at_most_twice_the_screen(space, landscape):
    """NSGA-II repeats evaluated cells often; each repeat is an Optuna trial. A screened ask stops drawing once
    as many proposals as the screen's size were unusable, so the study grows by at most 2 x screen per ask."""
    strategy = make_strategy("optuna-nsga2", space, seed=0, screen=8)
    drive(strategy, landscape, 5)
    grown = []
    for _ in range(40):
        before = len(strategy.study.trials)
        drive(strategy, landscape, 1)
        grown.append(len(strategy.study.trials) - before)
    assert max(grown) <= 2 * 8 and strategy.reused > 0


def test_a_screened_rl_policy_gets_the_stronger_entropy_bonus_and_keeps_exploring(space, landscape):
    """Stepping on the average of 16 draws, the policy at the unscreened entropy bonus (0.1) settles onto a few
    architectures and then draws evaluated ones by the thousand; the screened default (0.3) keeps it exploring."""
    assert make_strategy("rl", space).entropy_weight == 0.3
    assert make_strategy("rl", space, screen=1).entropy_weight == 0.1
    assert make_strategy("rl", space, objectives=["accuracy", "-params"]).entropy_weight == 0.1  # unscreened
    assert make_strategy("rl", space, entropy_weight=0.05).entropy_weight == 0.05

    def reused(**params) -> int:
        total = 0
        for seed in range(3):
            strategy = make_strategy("rl", space, seed=seed, **params)
            drive(strategy, landscape, 60)
            total += strategy.reused
        return total

    assert reused() * 3 < reused(entropy_weight=0.1)
