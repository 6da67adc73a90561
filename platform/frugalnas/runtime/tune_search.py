"""Any ask/tell strategy as a Ray Tune search: a thin ``Searcher`` adapter plus the Tuner set-up.

The strategy stays plain Python (it knows nothing of Ray); the adapter turns ``ask()`` into
``suggest()`` and completed trials into ``tell()``, and saves the strategy's state with Tune's
experiment checkpoints so ``Tuner.restore`` resumes the search without proposing an architecture twice.
"""
from __future__ import annotations

import os
import pickle
import signal
import threading
from typing import Any, Callable

from ray import tune
from ray.tune.result import AUTO_RESULT_KEYS
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, HyperBandScheduler
from ray.tune.search import ConcurrencyLimiter, Searcher

from frugalnas.registry import Registry

SCHEDULERS: Registry[Callable[..., Any]] = Registry("scheduler")
SCHEDULERS.register("fifo")(lambda max_t: FIFOScheduler())
SCHEDULERS.register("asha")(lambda max_t: ASHAScheduler(time_attr="training_iteration", max_t=max_t,
                                                        grace_period=1, reduction_factor=2))
SCHEDULERS.register("hyperband")(lambda max_t: HyperBandScheduler(time_attr="training_iteration", max_t=max_t,
                                                                  reduction_factor=2))


def numeric(metrics: dict) -> dict:
    """The numeric metrics a trainable reported (drops Tune's own bookkeeping, strings, booleans)."""
    return {k: v for k, v in metrics.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in AUTO_RESULT_KEYS}


class StrategySearcher(Searcher):
    """Ray Tune ``Searcher`` over a frugalnas strategy: suggests ``{"arch": canonical string,
    "suggestion": n}`` (n: the proposal's 1-based position, which orders trials).

    ``budget`` architectures are proposed at most; a trial's last reported result is told to the
    strategy when it completes (early-stopped trials tell what they reached). Failed trials are told
    nothing and counted in ``failed``.
    """

    def __init__(self, strategy, space, *, budget: int, metric: str = "accuracy", mode: str = "max"):
        super().__init__(metric=metric, mode=mode)
        self.strategy, self.space, self.budget = strategy, space, budget
        self.suggested = 0
        self.failed = 0
        self.live: dict[str, str] = {}  # trial id -> arch string, asked but not yet told
        self.told: list[tuple[str, dict]] = []

    def suggest(self, trial_id: str):
        if self.suggested >= self.budget:
            return Searcher.FINISHED
        arch = self.strategy.ask()
        if arch is None:  # the strategy has nothing left to propose
            return Searcher.FINISHED
        self.suggested += 1
        self.live[trial_id] = str(arch)
        return {"arch": str(arch), "suggestion": self.suggested}  # 1-based proposal order

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        arch = self.live.pop(trial_id, None)
        if arch is None:
            return
        if error or not result or self.metric not in result:
            self.failed += 1
            self.strategy.tell(self.space.parse(arch), None)  # recorded as failed: never proposed again
            return
        metrics = numeric(result)
        self.strategy.tell(self.space.parse(arch), metrics)
        self.told.append((arch, metrics))

    def get_state(self) -> dict:
        return {"strategy": self.strategy.state_dict(), "suggested": self.suggested, "failed": self.failed,
                "live": dict(self.live), "told": list(self.told)}

    def set_state(self, state: dict) -> None:
        self.strategy.load_state_dict(state["strategy"])
        self.suggested, self.failed = state["suggested"], state["failed"]
        self.live, self.told = dict(state["live"]), list(state["told"])

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as handle:
            pickle.dump(self.get_state(), handle)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as handle:
            self.set_state(pickle.load(handle))


def candidate_number(trial) -> int | None:
    """The candidate's number (its 1-based proposal order): the one numbering shown everywhere, in
    the progress lines, the leaderboard, MLflow's run names (``candidate-007``) and summary.json."""
    return trial.config.get("suggestion")


class TrialProgress(tune.Callback):
    """One line per finished candidate, instead of Tune's status tables. Candidates are named by
    their number (:func:`candidate_number`); with several trials at once they finish out of order,
    so the line also says how many have finished."""

    LABELS = {"accuracy": "val acc", "map50_95": "val mAP50-95"}

    def __init__(self, log: Callable[[str], None], budget: int, metric: str = "accuracy"):
        self.log, self.budget, self.finished, self.metric = log, budget, 0, metric

    def _prefix(self, trial) -> str:
        return f"  candidate {candidate_number(trial)}/{self.budget} ({self.finished} finished)"

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.finished += 1
        result = trial.last_result or {}
        score = result.get(self.metric)
        shown = "-" if score is None else f"{score:.4f}"
        self.log(f"{self._prefix(trial)}: {self.LABELS.get(self.metric, self.metric)} {shown} "
                 f"after {result.get('epoch', 0)} epoch(s), "
                 f"{result.get('images_processed', 0)} images, {result.get('params', 0):,} params  {trial.config.get('arch')}")

    def on_trial_error(self, iteration, trials, trial, **info):
        self.finished += 1
        self.log(f"{self._prefix(trial)} failed: {trial.config.get('arch')} ({trial.error_file})")


def make_tuner(trainable, searcher: StrategySearcher, *, scheduler: str, epochs_per_candidate: int,
               max_concurrent: int, cpus_per_trial: float, gpus_per_trial: float, storage_path: str,
               name: str, log: Callable[[str], None] | None = None, callbacks: list | tuple = ()) -> tune.Tuner:
    """A Tuner running ``trainable`` over the searcher's suggestions with the named scheduler."""
    resources = {"cpu": cpus_per_trial, "gpu": gpus_per_trial}
    # Tune's newer console output prints a settings box and a TensorBoard hint even at verbose=0;
    # progress is TrialProgress's one line per candidate.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    return tune.Tuner(
        tune.with_resources(trainable, resources),
        tune_config=tune.TuneConfig(
            search_alg=ConcurrencyLimiter(searcher, max_concurrent=max_concurrent),
            scheduler=SCHEDULERS.get(scheduler)(epochs_per_candidate),
            num_samples=searcher.budget, metric=searcher.metric, mode=searcher.mode,
            reuse_actors=True),  # a fresh worker process per trial costs seconds (benchmarks/RESULTS.md)
        run_config=tune.RunConfig(name=name, storage_path=storage_path, verbose=0,
                                  callbacks=([TrialProgress(log, searcher.budget, searcher.metric)] if log else []) + list(callbacks),
                                  failure_config=tune.FailureConfig(max_failures=2)),
    )


def fit_keeping_sigint(tuner):
    """``tuner.fit()``, then put back the Ctrl+C handler Tune replaces (it leaves its own installed
    when nothing interrupts the search, and a later Ctrl+C would then be swallowed)."""
    handler = signal.getsignal(signal.SIGINT)
    try:
        return tuner.fit()
    finally:
        if handler is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, handler)


def restore_tuner(path: str, trainable, *, cpus_per_trial: float, gpus_per_trial: float) -> tune.Tuner:
    """Resume an interrupted search from its experiment folder (strategy state included)."""
    return tune.Tuner.restore(path, trainable=tune.with_resources(trainable, {"cpu": cpus_per_trial,
                                                                             "gpu": gpus_per_trial}),
                              resume_unfinished=True, resume_errored=True)
