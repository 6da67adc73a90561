"""Candidates into MLflow as the search runs: a Tune callback on the driver.

Each trial becomes a child run of the experiment's parent run when it starts; every epoch's
metrics are logged as they are reported (so the MLflow UI shows a search in progress); when the
trial ends its selector history (read from the trial's last checkpoint) is logged as a plot and the
run is closed with the trial's outcome.
"""
from __future__ import annotations

import os

import torch
from ray import tune

from frugalnas.track.experiment import log_selector_history
from frugalnas.track.runs import ExperimentTracker, arch_params

#: What a candidate reports per epoch that is worth a metric (runtime/candidates.py).
CANDIDATE_METRICS = ("accuracy", "train_accuracy", "train_loss", "images_processed", "subset_updates",
                     "seconds", "epoch_seconds", "params", "flops")


class CandidateTracking(tune.Callback):
    """Tune callback: one MLflow child run per trial (see the module docstring)."""

    def __init__(self, tracker: ExperimentTracker, space):
        self.tracker, self.space = tracker, space

    def _run(self, trial) -> str:
        arch = trial.config["arch"]
        return self.tracker.candidate_run(
            trial.trial_id, name=f"candidate-{trial.config.get('suggestion', 0):03d}", arch=arch,
            params={**arch_params(self.space, self.space.parse(arch)), "suggestion": trial.config.get("suggestion"),
                    "trial_id": trial.trial_id})

    def on_trial_start(self, iteration, trials, trial, **info):
        self._run(trial)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        metrics = {k: result[k] for k in CANDIDATE_METRICS if k in result}
        self.tracker.log_metrics(self._run(trial), metrics, step=result.get("epoch", 0))

    def on_trial_complete(self, iteration, trials, trial, **info):
        run_id = self._run(trial)
        log_selector_history(self.tracker, run_id, checkpoint_selector_history(trial),
                             f"candidate {trial.config.get('suggestion')}: {trial.config['arch']}")
        self.tracker.end_run(run_id, "FINISHED")

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
    path = os.path.join(checkpoint.path, "candidate.pt")
    if not os.path.exists(path):  # remote storage: the driver would have to download it
        return None
    return torch.load(path, map_location="cpu", weights_only=False)["selector"]["history"]
