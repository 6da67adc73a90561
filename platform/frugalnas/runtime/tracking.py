"""Candidates into MLflow as the search runs: a Tune callback on the driver.

Each trial becomes a child run of the experiment's parent run when it starts; every epoch's
metrics are logged as they are reported (so the MLflow UI shows a search in progress); when the
trial ends its selector history (read from the trial's last checkpoint) is logged as a plot and the
run is closed with the trial's outcome.
"""
from __future__ import annotations

import functools
import os
from typing import Callable

import torch
from ray import tune

from frugalnas.track.experiment import log_selector_history
from frugalnas.track.runs import ExperimentTracker, arch_params

#: What a candidate reports per epoch that is worth a metric (runtime/candidates.py).
CANDIDATE_METRICS = ("accuracy", "train_accuracy", "train_loss", "images_processed", "subset_updates",
                     "seconds", "epoch_seconds", "params", "flops",
                     # detection candidates (runtime/detect_candidates.py)
                     "map50_95", "map50", "precision", "recall", "train_seconds", "hardness_seconds", "val_seconds",
                     "setup_seconds")


def _keeps_searching(hook):
    """A tracking failure mid-search (server restarted, disk full) is reported, not fatal: hours of
    candidates must not be lost to a logging call. The store was checked before the search began."""

    @functools.wraps(hook)
    def guarded(self, iteration, trials, trial, *args, **info):
        try:
            hook(self, iteration, trials, trial, *args, **info)
        except Exception as error:  # MLflow raises many kinds; any of them means "not recorded"
            self.failures += 1
            self.log(f"  tracking: MLflow did not record {hook.__name__} of candidate "
                     f"{trial.config.get('suggestion')} ({type(error).__name__}: {str(error).splitlines()[0][:200]}); "
                     "the search goes on")

    return guarded


class CandidateTracking(tune.Callback):
    """Tune callback: one MLflow child run per trial (see the module docstring)."""

    def __init__(self, tracker: ExperimentTracker, space, log: Callable[[str], None] = print):
        self.tracker, self.space, self.log = tracker, space, log
        self.failures = 0

    def _run(self, trial) -> str:
        arch = trial.config["arch"]
        return self.tracker.candidate_run(
            trial.trial_id, name=f"candidate-{trial.config.get('suggestion', 0):03d}", arch=arch,
            params={**arch_params(self.space, self.space.parse(arch)), "candidate": trial.config.get("suggestion"),
                    "trial_id": trial.trial_id})

    @_keeps_searching
    def on_trial_start(self, iteration, trials, trial, **info):
        self._run(trial)

    @_keeps_searching
    def on_trial_result(self, iteration, trials, trial, result, **info):
        metrics = {k: result[k] for k in CANDIDATE_METRICS if k in result}
        self.tracker.log_metrics(self._run(trial), metrics, step=result.get("epoch", 0))

    @_keeps_searching
    def on_trial_complete(self, iteration, trials, trial, **info):
        run_id = self._run(trial)
        log_selector_history(self.tracker, run_id, checkpoint_selector_history(trial),
                             f"candidate {trial.config.get('suggestion')}: {trial.config['arch']}")
        self.tracker.end_run(run_id, "FINISHED")

    @_keeps_searching
    def on_trial_error(self, iteration, trials, trial, **info):
        error = None
        if trial.error_file and os.path.exists(trial.error_file):
            with open(trial.error_file) as handle:
                error = handle.read()
        self.tracker.end_run(self._run(trial), "FAILED", error or "trial failed")


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
