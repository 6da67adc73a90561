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

from ray import cloudpickle, tune
from ray.exceptions import (ActorPlacementGroupRemoved, ActorUnschedulableError, LocalRayletDiedError,
                            NodeDiedError, OutOfMemoryError, RayActorError, RayTaskError, WorkerCrashedError)
from ray.tune.result import AUTO_RESULT_KEYS
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, HyperBandScheduler
from ray.tune.search import ConcurrencyLimiter, Searcher

from frugalnas.registry import Registry

SCHEDULERS: Registry[Callable[..., Any]] = Registry("scheduler")
SCHEDULERS.register("fifo")(lambda max_t: FIFOScheduler())
SCHEDULERS.register("asha")(lambda max_t: ASHAScheduler(time_attr="training_iteration", max_t=max_t,
                                                        grace_period=1, reduction_factor=2))


class FinishingHyperBand(HyperBandScheduler):
    """Tune's HyperBandScheduler, except that a bracket's paused trials are stopped once it is finished.

    In Ray 2.60 a bracket is only wrapped up when a trial *reports* its last milestone. When the last
    running trial of a bracket instead completes (a function trainable that returns after its final
    epoch is removed without that result passing through ``on_trial_result``), the bracket is finished
    but its trials paused at that milestone are never stopped nor resumed: they stay PAUSED and the
    search never ends (seen as a hang in CI). A paused trial there has trained to ``max_t``, so
    stopping it is what the bracket would have done."""

    def on_trial_remove(self, tune_controller, trial):
        bracket, _ = self._trial_info[trial]
        super().on_trial_remove(tune_controller, trial)
        if bracket.finished():
            bracket.cleanup_full(tune_controller)  # stops the bracket's PAUSED trials (a no-op otherwise)


SCHEDULERS.register("hyperband")(lambda max_t: FinishingHyperBand(time_attr="training_iteration", max_t=max_t,
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

    Lost infrastructure: Tune (2.60) retries only a trial that was running when it failed. A trial
    whose actor or node died while it was being started (a retry or a new candidate placed on a node
    in the seconds before Ray declared the node dead) ends in error whatever ``max_failures`` says.
    Such a trial is proposed again (:meth:`trial_errored`, called by :class:`CandidateRetries`): a new
    trial of the same candidate (architecture and number, ``"attempt": k``) that continues from the
    last checkpoint of the one it replaces (``"resume"``, read by :func:`candidate_checkpoint`) and
    carries its failures, so the retries count against ``max_failures`` as Tune's own do. The
    strategy is told nothing about the attempt that was replaced; it hears the candidate's one
    outcome when the last attempt ends. Since an error is told to the searcher before the error is
    known, an errored trial waits for that decision; one left undecided (no :class:`CandidateRetries`
    callback) is told as a failure at the next suggestion.
    """

    def __init__(self, strategy, space, *, budget: int, metric: str = "accuracy", mode: str = "max",
                 max_failures: int = 2):
        super().__init__(metric=metric, mode=mode)
        self.strategy, self.space, self.budget, self.max_failures = strategy, space, budget, max_failures
        self.suggested = 0
        self.failed = 0
        self.live: dict[str, str] = {}  # trial id -> arch string, asked but not yet told
        self.told: list[tuple[str, dict]] = []
        self.errored: dict[str, str] = {}  # trial id -> arch: ended in error, retry not yet decided
        self.retries: list[dict] = []  # candidates to propose again (the config of their next attempt)
        self.carried: dict[str, int] = {}  # a re-proposal's trial id -> its earlier attempts' failures (until it starts)
        self.superseded: dict[str, int] = {}  # trial id of an attempt proposed again -> its candidate's failures
        self.paused: set[str] = set()  # live trials a scheduler paused (as of the last step)

    def suggest(self, trial_id: str):
        self._fail_undecided()
        if self.retries:
            config = self.retries.pop(0)
            self.live[trial_id] = config["arch"]
            self.carried[trial_id] = config.pop("failures")
            return config
        if self.suggested >= self.budget:
            # a running candidate may yet lose its node and need another attempt: finished only when none runs
            return None if self._running() else Searcher.FINISHED
        arch = self.strategy.ask()
        if arch is None:  # the strategy has nothing left to propose
            return None if self._running() else Searcher.FINISHED
        self.suggested += 1
        self.live[trial_id] = str(arch)
        return {"arch": str(arch), "suggestion": self.suggested}  # 1-based proposal order

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        arch = self.live.pop(trial_id, None)
        if arch is None:
            return
        if error:  # told before the error can be read: wait for trial_errored (or the next suggestion)
            self.errored[trial_id] = arch
            return
        self._tell(arch, result)

    def _tell(self, arch: str, result: dict | None) -> None:
        if not result or not finite_number(result.get(self.metric)):
            self.failed += 1
            self.strategy.tell(self.space.parse(arch), None)  # recorded as failed: never proposed again
            return
        metrics = numeric(result)
        self.strategy.tell(self.space.parse(arch), metrics)
        self.told.append((arch, metrics))

    def done(self) -> bool:
        """Every budgeted candidate proposed, none waiting to be proposed again, none running or
        starting (a trial a scheduler keeps paused does not count: see :class:`FinishingLimiter`)."""
        return (not self.retries and not self.errored and self.suggested >= self.budget
                and not self._running())

    def _running(self) -> bool:
        """Whether a live trial is running or about to (not paused: HyperBand can leave a trial that
        trained all its epochs paused for good, a race in Ray 2.60, and Tune ends the search then)."""
        return bool(set(self.live) - self.paused)

    def _fail_undecided(self) -> None:
        for trial_id in list(self.errored):
            self._tell(self.errored.pop(trial_id), None)

    def trial_errored(self, trial, failures: int | None = None) -> bool:
        """Decide what a trial that ended in error means, once its error can be read: True if its
        candidate is proposed again (an infrastructure fault, :func:`infrastructure_fault`, with
        retries left: ``failures``, the candidate's failures so far, at most ``max_failures``),
        else it is told to the strategy as a failure. ``failures`` defaults to the trial's count."""
        arch = self.errored.pop(trial.trial_id, None)
        if arch is None:
            return False
        failures = trial.run_metadata.num_failures if failures is None else failures
        if not (infrastructure_fault(trial) and (self.max_failures < 0 or failures <= self.max_failures)):
            self._tell(arch, None)
            return False
        self.superseded[trial.trial_id] = failures
        self.retries.append({"arch": arch, "suggestion": trial.config["suggestion"], "attempt": trial.config.get("attempt", 1) + 1,
                             "resume": checkpoint_uri(trial.checkpoint), "failures": failures})
        return True

    def retries_of(self, trial) -> int:
        """The retry that replaces the superseded ``trial``: its candidate's failures so far."""
        return self.superseded[trial.trial_id]

    def forget_ended(self, trials) -> None:
        """Trials Tune ended without telling the searcher (none should): told as they ended, so that
        the search does not wait for them forever."""
        self.paused = {trial.trial_id for trial in trials if trial.status == "PAUSED" and trial.trial_id in self.live}
        if not self.live:
            return
        for trial in trials:
            if trial.trial_id in self.live and trial.status in ("TERMINATED", "ERROR"):
                self._tell(self.live.pop(trial.trial_id),
                           trial.last_result if trial.status == "TERMINATED" else None)

    def get_state(self) -> dict:
        return {"strategy": self.strategy.state_dict(), "suggested": self.suggested, "failed": self.failed,
                "live": dict(self.live), "told": list(self.told),
                "errored": dict(self.errored), "retries": [dict(r) for r in self.retries],
                "carried": dict(self.carried), "superseded": dict(self.superseded),
                "max_failures": self.max_failures}

    def set_state(self, state: dict) -> None:
        self.strategy.load_state_dict(state["strategy"])
        self.suggested, self.failed = state["suggested"], state["failed"]
        self.live, self.told = dict(state["live"]), list(state["told"])
        self.errored = dict(state.get("errored", {}))
        self.retries = [dict(r) for r in state.get("retries", [])]
        self.carried, self.superseded = dict(state.get("carried", {})), dict(state.get("superseded", {}))
        self.max_failures = state.get("max_failures", self.max_failures)

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as handle:
            pickle.dump(self.get_state(), handle)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as handle:
            self.set_state(pickle.load(handle))


#: What a lost node or process raises (Ray wraps them in a RayTaskError when a task saw them).
INFRASTRUCTURE_ERRORS = (RayActorError, NodeDiedError, WorkerCrashedError, LocalRayletDiedError,
                         OutOfMemoryError, ActorUnschedulableError, ActorPlacementGroupRemoved)
#: The same, as Tune's error text says it (when the pickled error cannot be read).
_INFRASTRUCTURE_TEXT = re.compile(r"ActorDiedError|ActorUnavailableError|NodeDiedError|WorkerCrashedError|"
                                  r"actor died unexpectedly|node has died|died because")


def infrastructure_fault(trial) -> bool:
    """Whether the trial's last failure was the infrastructure's (its actor's process or node died:
    a lost node, a killed process) rather than the candidate's (its training raised or diverged)."""
    path = getattr(trial, "pickled_error_file", None)
    if path and os.path.exists(path):
        try:
            with open(path, "rb") as handle:
                error = cloudpickle.load(handle)
        except Exception:  # noqa: BLE001 (an error Ray could not pickle whole: read its text instead)
            error = None
        if error is not None:
            cause = getattr(error, "cause", None) if isinstance(error, RayTaskError) else None
            return isinstance(error, INFRASTRUCTURE_ERRORS) or isinstance(cause, INFRASTRUCTURE_ERRORS)
    text = trial_error(trial) or ""
    last = text.rsplit("Failure # ", 1)[-1]  # Tune appends one entry per failure
    return bool(_INFRASTRUCTURE_TEXT.search(last)) and "RayTaskError(" not in last


def checkpoint_uri(checkpoint) -> str | None:
    """Where a checkpoint lies, as a path or URI that ``tune.Checkpoint`` opens again."""
    if checkpoint is None:
        return None
    kind = getattr(checkpoint.filesystem, "type_name", "local")
    return checkpoint.path if kind == "local" else f"{kind}://{checkpoint.path}"


def candidate_checkpoint(config: dict):
    """The checkpoint a candidate's trainable continues from: Tune's own (a retry, an unpaused trial,
    a resumed search), else the last one of the attempt this trial replaces (``config["resume"]``, a
    candidate proposed again after its node was lost, :class:`StrategySearcher`), else None."""
    checkpoint = tune.get_checkpoint()
    if checkpoint is None and config.get("resume"):
        checkpoint = tune.Checkpoint(config["resume"])
    return checkpoint


def latest_attempts(trials) -> list:
    """One trial per candidate: the last attempt (a candidate proposed again after a lost node has
    a trial per attempt; the earlier ones are not results)."""
    latest: dict = {}
    for trial in trials:
        key = trial.config.get("suggestion", trial.trial_id)
        if key not in latest or trial.config.get("attempt", 1) > latest[key].config.get("attempt", 1):
            latest[key] = trial
    return list(latest.values())


class CandidateRetries(tune.Callback):
    """The driver-side half of proposing a candidate again (:class:`StrategySearcher`): reads a
    failed trial's error and has the searcher decide, and gives a new attempt, when it starts, the
    failures of the earlier ones (so Tune's own retries of it count against the same ``max_failures``,
    and its ``retries`` are the candidate's). It must come first among the callbacks: the progress
    lines and MLflow ask the searcher what was decided.

    Tune processes a trial whose reused actor died while being reset twice: once as an actor failure
    (the trial is requeued, ``on_trial_recover``), at once again as a failed task (now pending, it
    ends in error). That is one fault counted twice; an error with no start since the last requeue
    is counted once."""

    def __init__(self, searcher: StrategySearcher):
        self.searcher = searcher
        self.requeued: set[str] = set()  # requeued by Tune and not started since

    def on_trial_start(self, iteration, trials, trial, **info):
        self.requeued.discard(trial.trial_id)
        carried = self.searcher.carried.pop(trial.trial_id, 0)
        if carried:
            trial.run_metadata.num_failures += carried
            trial.run_metadata.invalidate_cache()

    def on_trial_recover(self, iteration, trials, trial, **info):
        self.requeued.add(trial.trial_id)

    def on_trial_error(self, iteration, trials, trial, **info):
        failures = trial.run_metadata.num_failures
        if trial.trial_id in self.requeued and failures > 1:
            failures -= 1
        self.requeued.discard(trial.trial_id)
        failures += self.searcher.carried.pop(trial.trial_id, 0)  # an attempt that never started
        self.searcher.trial_errored(trial, failures)

    def on_step_begin(self, iteration, trials, **info):
        self.searcher.forget_ended(trials)

    def get_state(self) -> dict:
        return {"requeued": sorted(self.requeued)}

    def set_state(self, state: dict) -> None:
        self.requeued = set(state.get("requeued", ()))


def superseded(searcher, trial) -> bool:
    """Whether ``trial`` is an attempt its candidate's next attempt replaces (see StrategySearcher)."""
    return searcher is not None and trial.trial_id in searcher.superseded


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
    candidate get a line each too; so does a candidate proposed again as a new trial (``searcher``:
    the :class:`StrategySearcher` that decides it)."""

    LABELS = {"accuracy": "val acc", "map50_95": "val mAP50-95"}

    def __init__(self, log: Callable[[str], None], budget: int, metric: str = "accuracy", max_failures: int = 2,
                 searcher: StrategySearcher | None = None):
        self.log, self.budget, self.finished, self.metric, self.max_failures = log, budget, 0, metric, max_failures
        self.searcher = searcher

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
        self._retry_line(trial, trial.run_metadata.num_failures)

    def _retry_line(self, trial, retry: int, how: str = "") -> None:
        limit = "unlimited" if self.max_failures < 0 else str(self.max_failures)
        self.log(f"  candidate {candidate_number(trial)}/{self.budget}: {error_summary(trial_error(trial))}; retry "
                 f"{retry} of {limit}, from its checkpoint after epoch {(trial.last_result or {}).get('epoch', 0)}{how}")

    def on_trial_error(self, iteration, trials, trial, **info):
        if superseded(self.searcher, trial):
            self._retry_line(trial, self.searcher.retries_of(trial), ", as a new trial (lost while starting: Tune retries only running trials)")
            return
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


class FinishingLimiter(ConcurrencyLimiter):
    """Tune's ConcurrencyLimiter, except that it says the search is finished once the searcher is
    :meth:`~StrategySearcher.done`. Tune's own limiter counts a paused trial as live and does not ask
    the searcher while the limit is reached, so with ``num_samples`` unlimited a search whose last
    trials a scheduler keeps paused (HyperBand, ``max_concurrent_trials`` 1) would never be declared
    finished: the search would hang. Once finished, Tune runs the paused trials to their end as it
    does for any search whose suggestions are used up."""

    def suggest(self, trial_id: str):
        if self.searcher.done():
            return Searcher.FINISHED
        return super().suggest(trial_id)


def make_tuner(trainable, searcher: StrategySearcher, *, scheduler: str, epochs_per_candidate: int,
               max_concurrent: int, cpus_per_trial: float, gpus_per_trial: float, storage_path: str,
               name: str, log: Callable[[str], None] | None = None, callbacks: list | tuple = (),
               max_failures: int = 2) -> tune.Tuner:
    """A Tuner running ``trainable`` over the searcher's suggestions with the named scheduler.

    A trial that fails (its node is lost, its process killed, its training raises) is retried up to
    ``max_failures`` times (-1: no limit) from its last checkpoint; one that Tune will not retry because
    its node or process died while it was starting is proposed again by the searcher
    (:class:`StrategySearcher`, :class:`CandidateRetries`, which comes first among the callbacks so the
    others know what was decided). The searcher ends the search once its budget is accounted for
    (Tune's ``num_samples`` is unlimited: attempts proposed again are trials too). The search's state
    is saved every second (:func:`tune_settings`)."""
    resources = {"cpu": cpus_per_trial, "gpu": gpus_per_trial}
    searcher.max_failures = max_failures  # one retry policy for Tune's retries and the searcher's
    progress = [TrialProgress(log, searcher.budget, searcher.metric, max_failures, searcher)] if log else []
    tune_settings()
    return tune.Tuner(
        tune.with_resources(trainable, resources),
        tune_config=tune.TuneConfig(
            search_alg=FinishingLimiter(searcher, max_concurrent=max_concurrent),
            scheduler=SCHEDULERS.get(scheduler)(epochs_per_candidate),
            num_samples=-1, metric=searcher.metric, mode=searcher.mode,
            reuse_actors=True),  # a fresh worker process per trial costs seconds (benchmarks/RESULTS.md)
        run_config=tune.RunConfig(name=name, storage_path=storage_path, verbose=0,
                                  callbacks=[CandidateRetries(searcher), *progress, *callbacks],
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
