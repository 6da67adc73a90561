"""Any ask/tell strategy as a Ray Tune search: a thin ``Searcher`` adapter plus the Tuner set-up.

The strategy stays plain Python (it knows nothing of Ray); the adapter turns ``ask()`` into
``suggest()`` and completed trials into ``tell()``, and saves the strategy's state with Tune's
experiment checkpoints so ``Tuner.restore`` resumes the search without proposing an architecture twice.
"""
from __future__ import annotations

import math
import os
import pickle
import re
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


def finite_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def numeric(metrics: dict) -> dict:
    """The numeric metrics a trainable reported (drops Tune's own bookkeeping, strings, booleans)."""
    return {k: v for k, v in metrics.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in AUTO_RESULT_KEYS}


class StrategySearcher(Searcher):
    """Ray Tune ``Searcher`` over a frugalnas strategy: suggests ``{"arch": canonical string,
    "suggestion": n}`` (n: the proposal's 1-based position, which orders trials).

    ``budget`` architectures are proposed at most; a trial's last reported result is told to the
    strategy when it completes (early-stopped trials tell what they reached). A candidate that failed
    (its retries used up, or its training diverged) is told as a failure, ``tell(arch, None)``: the
    strategy records it as infeasible, never proposes it again and learns nothing else from it (it
    enters no population, model or Pareto front); counted in ``failed``. An accuracy that is not a
    finite number is a failure too, never a score. Tune calls ``on_trial_complete`` once per trial,
    after its last retry, so every architecture is told exactly once.
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
        if error or not result or not finite_number(result.get(self.metric)):
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


#: How a candidate ended (summary.json trials, the leaderboard, the MLflow run's frugalnas.status tag).
FINISHED, FAILED, DIVERGED = "finished", "failed", "diverged"
_ERROR_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Diverged|Interrupt|Exit)\b")


def error_summary(text: str | None) -> str:
    """The line of a trial's error that says what went wrong: the last ``SomeError: ...`` line (Ray wraps
    the worker's traceback in its own, and Tune appends one entry per failure), else why Ray says an
    actor died (a lost node, a killed process), else the first line."""
    lines = [line.strip() for line in (text or "").splitlines()
             if line.strip() and not line.startswith("Failure # ")]  # Tune's header of each entry
    for line in reversed(lines):
        if _ERROR_LINE.match(line):
            return line[:300]
    for line in reversed(lines):
        if "died because" in line or "died unexpectedly" in line:
            return line[:300]
    return lines[0][:300] if lines else "failed (no error recorded)"


def trial_error(trial) -> str | None:
    """The full error text Tune recorded for a failed trial (None if it did not fail)."""
    path = getattr(trial, "error_file", None)
    if not path or not os.path.exists(path):
        return None if trial.status != "ERROR" else "failed (no error recorded)"
    with open(path, errors="replace") as handle:
        return handle.read()


def trial_outcome(trial, metric: str = "accuracy") -> dict:
    """How a trial ended, the way summary.json, the leaderboard and MLflow report it: ``status``
    (finished, failed or diverged), ``error`` (one line), ``epochs`` (completed), ``retries`` (times
    it was started again after a failure: a lost node, a killed process, an error). A trial that
    ended without a finite ``metric`` (its score) failed too."""
    result = trial.last_result or {}
    error = trial_error(trial) if trial.status == "ERROR" else None
    status = FINISHED
    if error is not None or not finite_number(result.get(metric)):
        status = DIVERGED if error and "TrainingDiverged" in error else FAILED
    return {"status": status, "error": None if status == FINISHED else error_summary(error),
            "epochs": result.get("epoch", 0),
            "retries": trial.run_metadata.num_failures - (trial.status == "ERROR")}  # the last failure is final


class TrialProgress(tune.Callback):
    """One line per finished candidate, instead of Tune's status tables. Candidates are named by
    their number (:func:`candidate_number`); with several trials at once they finish out of order,
    so the line also says how many have finished. A retry (lost node, killed process) and a failed
    candidate get a line each too."""

    LABELS = {"accuracy": "val acc", "map50_95": "val mAP50-95"}

    def __init__(self, log: Callable[[str], None], budget: int, metric: str = "accuracy", max_failures: int = 2):
        self.log, self.budget, self.finished, self.metric, self.max_failures = log, budget, 0, metric, max_failures

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

    def on_trial_recover(self, iteration, trials, trial, **info):
        limit = "unlimited" if self.max_failures < 0 else str(self.max_failures)
        self.log(f"  candidate {candidate_number(trial)}/{self.budget}: {error_summary(trial_error(trial))}; retry "
                 f"{trial.run_metadata.num_failures} of {limit}, from its checkpoint after epoch "
                 f"{(trial.last_result or {}).get('epoch', 0)}")

    def on_trial_error(self, iteration, trials, trial, **info):
        self.finished += 1
        outcome = trial_outcome(trial, self.metric)
        self.log(f"{self._prefix(trial)} {outcome['status']} after {outcome['epochs']} epoch(s): {outcome['error']}  "
                 f"{trial.config.get('arch')}")

    def get_state(self) -> dict:  # saved with the experiment: a resumed search goes on counting
        return {"finished": self.finished}

    def set_state(self, state: dict) -> None:
        self.finished = state["finished"]


#: Seconds between saves of the search's state (trials, strategy, callbacks); Tune's default ("auto")
#: is 10 s or more, so a driver killed without warning would lose up to that much of the search.
STATE_PERIOD_S = "1"


def tune_settings() -> None:
    """Process-wide Tune settings (environment variables it reads when a search starts; an explicit
    setting wins): save the search's state every second, so ``--resume`` after a killed driver
    continues every candidate that reported an epoch more than about a second before the kill instead
    of proposing it again; and no console output besides TrialProgress's lines (Tune's newer output
    prints a settings box and a TensorBoard hint even at verbose=0, on resume too)."""
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", STATE_PERIOD_S)
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")


def make_tuner(trainable, searcher: StrategySearcher, *, scheduler: str, epochs_per_candidate: int,
               max_concurrent: int, cpus_per_trial: float, gpus_per_trial: float, storage_path: str,
               name: str, log: Callable[[str], None] | None = None, callbacks: list | tuple = (),
               max_failures: int = 2) -> tune.Tuner:
    """A Tuner running ``trainable`` over the searcher's suggestions with the named scheduler.

    A trial that fails (its node is lost, its process killed, its training raises) is retried up to
    ``max_failures`` times (-1: no limit) from its last checkpoint. The search's state is saved every
    second (:func:`tune_settings`)."""
    resources = {"cpu": cpus_per_trial, "gpu": gpus_per_trial}
    tune_settings()
    return tune.Tuner(
        tune.with_resources(trainable, resources),
        tune_config=tune.TuneConfig(
            search_alg=ConcurrencyLimiter(searcher, max_concurrent=max_concurrent),
            scheduler=SCHEDULERS.get(scheduler)(epochs_per_candidate),
            num_samples=searcher.budget, metric=searcher.metric, mode=searcher.mode,
            reuse_actors=True),  # a fresh worker process per trial costs seconds (benchmarks/RESULTS.md)
        run_config=tune.RunConfig(name=name, storage_path=storage_path, verbose=0,
                                  callbacks=([TrialProgress(log, searcher.budget, searcher.metric, max_failures)] if log else [])
                                  + list(callbacks),
                                  failure_config=tune.FailureConfig(max_failures=max_failures)),
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
    """Resume an interrupted search from its experiment folder (strategy state included).

    Unfinished candidates continue from their checkpoints; failed ones stay failed (the strategy was
    already told so, and a candidate that used up its retries would most likely fail again)."""
    tune_settings()
    return tune.Tuner.restore(path, trainable=tune.with_resources(trainable, {"cpu": cpus_per_trial,
                                                                             "gpu": gpus_per_trial}),
                              resume_unfinished=True, resume_errored=False)
