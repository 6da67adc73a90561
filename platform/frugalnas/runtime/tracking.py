"""Candidates into MLflow as the search runs: a Tune callback on the driver.

Each candidate becomes a child run of the experiment's parent run when its trial starts; every
epoch's metrics are logged as they are reported (so the MLflow UI shows a search in progress); when
the trial ends its selector history (read from the trial's last checkpoint) is logged as a plot and
the run is closed with the candidate's outcome (tag ``frugalnas.status``: finished, failed or
diverged; a failed one also ``frugalnas.error`` and ``frugalnas.epochs``, the epochs it completed).

Faults do not duplicate anything: a trial retried after a lost node or a killed process, a
candidate proposed again as a new trial (its node lost while it started), or one resumed after the
driver was killed, keeps its run (runs are keyed by candidate number and architecture), and an
epoch it reports again after resuming from an older checkpoint is not logged twice.
"""
from __future__ import annotations

import functools
import os
from typing import Callable

import torch
from ray import tune

from frugalnas.runtime.tune_search import FINISHED, candidate_number, superseded, trial_outcome
from frugalnas.track.experiment import log_selector_history
from frugalnas.track.runs import STATUS_TAG, ExperimentTracker, arch_params

#: What a candidate reports per epoch that is worth a metric (runtime/candidates.py).
CANDIDATE_METRICS = ("accuracy", "train_accuracy", "train_loss", "images_processed", "subset_updates",
                     "seconds", "epoch_seconds", "params", "flops",
                     # detection candidates (runtime/detect_candidates.py)
                     "map50_95", "map50", "precision", "recall", "train_seconds", "hardness_seconds", "val_seconds",
                     "setup_seconds")


def _keeps_searching(hook):
    """A tracking failure mid-search (server restarted, disk full) is reported, not fatal: hours of
    candidates must not be lost to a logging call. The store was checked before the search began.
    What was not recorded is listed in summary.json (``tracking.not_logged``)."""

    @functools.wraps(hook)
    def guarded(self, iteration, trials, trial, *args, **info):
        try:
            hook(self, iteration, trials, trial, *args, **info)
        except Exception as error:  # MLflow raises many kinds; any of them means "not recorded"
            self.failures += 1
            what = {"on_trial_start": "its run", "on_trial_result": "metrics of epoch "
                    f"{(args[0] if args else info.get('result') or {}).get('epoch')}",
                    "on_trial_complete": "its end", "on_trial_error": "its failure",
                    "on_trial_recover": "its retry"}.get(hook.__name__, hook.__name__)
            entry = self.tracker.record_not_logged(f"candidate {candidate_number(trial)}: {what}", error)
            self.log(f"  tracking: MLflow did not record {what} of candidate {candidate_number(trial)} "
                     f"({entry['error']}); the search goes on")

    return guarded


class CandidateTracking(tune.Callback):
    """Tune callback: one MLflow child run per candidate (see the module docstring). ``searcher``: the
    StrategySearcher, which says whether a trial that failed is replaced by a new attempt."""

    def __init__(self, tracker: ExperimentTracker, space, log: Callable[[str], None] = print, metric: str = "accuracy",
                 searcher=None):
        self.tracker, self.space, self.log, self.metric, self.searcher = tracker, space, log, metric, searcher
        self.failures = 0

    def _run(self, trial) -> str:
        arch, number = trial.config["arch"], candidate_number(trial)
        return self.tracker.candidate_run(
            str(number if number is not None else trial.trial_id), name=f"candidate-{number or 0:03d}", arch=arch,
            params={**arch_params(self.space, self.space.parse(arch)), "candidate": number,
                    "trial_id": trial.trial_id})

    @_keeps_searching
    def on_trial_start(self, iteration, trials, trial, **info):
        self._run(trial)

    @_keeps_searching
    def on_trial_result(self, iteration, trials, trial, result, **info):
        metrics = {k: result[k] for k in CANDIDATE_METRICS if k in result}
        self.tracker.log_epoch(self._run(trial), metrics, step=result.get("epoch", 0))

    @_keeps_searching
    def on_trial_recover(self, iteration, trials, trial, **info):
        self.tracker.set_tags(self._run(trial), {"frugalnas.retries": trial.run_metadata.num_failures})

    @_keeps_searching
    def on_trial_complete(self, iteration, trials, trial, **info):
        run_id = self._run(trial)
        outcome = trial_outcome(trial, self.metric)
        log_selector_history(self.tracker, run_id, checkpoint_selector_history(trial),
                             f"candidate {candidate_number(trial)}: {trial.config['arch']}")
        self.tracker.set_tags(run_id, {STATUS_TAG: outcome["status"], "frugalnas.epochs": outcome["epochs"],
                                       "frugalnas.retries": outcome["retries"]})
        self.tracker.end_run(run_id, "FINISHED" if outcome["status"] == FINISHED else "FAILED", outcome["error"])

    @_keeps_searching
    def on_trial_error(self, iteration, trials, trial, **info):
        if superseded(self.searcher, trial):  # its next attempt continues the run
            self.tracker.set_tags(self._run(trial), {"frugalnas.retries": self.searcher.retries_of(trial)})
            return
        run_id = self._run(trial)
        outcome = trial_outcome(trial, self.metric)
        self.tracker.set_tags(run_id, {STATUS_TAG: outcome["status"], "frugalnas.epochs": outcome["epochs"],
                                       "frugalnas.retries": outcome["retries"],
                                       "frugalnas.error_summary": outcome["error"]})
        error = None
        if trial.error_file and os.path.exists(trial.error_file):
            with open(trial.error_file, errors="replace") as handle:
                error = handle.read()
        self.tracker.end_run(run_id, "FAILED", error or outcome["error"])


def checkpoint_selector_history(trial) -> list[dict] | None:
    """The selector history in the trial's latest checkpoint (None without a local checkpoint)."""
    checkpoint = trial.checkpoint
    if checkpoint is None:
        return None
    for name in ("candidate.pt", "selection.pt"):  # classification / detection candidates
        path = os.path.join(checkpoint.path, name)
        if os.path.exists(path):
            return torch.load(path, map_location="cpu", weights_only=False)["selector"]["history"]
    return None  # remote storage: the driver would have to download it
