"""Searches that survive faults, each injected for real: candidates that crash, diverge or lose their
process (a test-only space family, tests/fault_injection.py), the tracking store failing, the
retry policy. Lost nodes and killed drivers: tests/test_faults_cluster.py and test_faults_driver.py."""
from __future__ import annotations

import glob
import json
import math
import pickle
from types import SimpleNamespace

import pytest
import yaml
from click.testing import CliRunner

import fault_injection
from frugalnas.cli import _print_summary, cli
from frugalnas.config import parse_config
from frugalnas.errors import ConfigError
from frugalnas.strategies import make_strategy

NETWORK = {"channels": 4, "cells_per_stage": 1, "stages": 2}
TINY = {
    "name": "faults",
    "seed": 0,
    "dataset": {"source": "digits", "codec": "png", "val_fraction": 0.15},
    "selection": {"policy": "random", "subset_size": 60},  # one optimiser step per epoch (batch 64)
    "search": {"strategy": "random", "budget": 5, "scheduler": "fifo", "epochs_per_candidate": 3},
    "final": {"epochs": 1},
    "resources": {"cpus_per_trial": 1, "max_concurrent_trials": 1, "max_failures": 1},
}


# ---------------------------------------------------------------- the retry policy in the config


def test_max_failures_defaults_to_two_and_is_checked():
    assert parse_config({"name": "x"}).resources.max_failures == 2
    assert parse_config({"name": "x", "resources": {"max_failures": -1}}).resources.max_failures == -1
    with pytest.raises(ConfigError, match="resources.max_failures"):
        parse_config({"name": "x", "resources": {"max_failures": -2}})


# ---------------------------------------------------------------- how the strategy is told


def test_a_failed_or_nan_candidate_is_told_to_the_strategy_as_a_failure_once(tmp_path):
    from frugalnas.runtime.tune_search import StrategySearcher
    from frugalnas.spaces import load_space

    space = load_space("nb201")
    strategy = make_strategy("evolution", space, seed=0, population_size=2, sample_size=1)
    searcher = StrategySearcher(strategy, space, budget=4)
    configs = {f"t{i}": searcher.suggest(f"t{i}") for i in range(4)}
    searcher.on_trial_complete("t0", {"accuracy": 0.5, "params": 10})
    searcher.on_trial_complete("t1", error=True)  # crashed: retries used up
    searcher.trial_errored(failed_trial("t1", configs["t1"], tmp_path, training_error(), failures=3))
    searcher.on_trial_complete("t2", {"accuracy": float("nan")})  # NaN is never a score
    searcher.on_trial_complete("t3", {"train_loss": 1.0})  # no accuracy at all
    searcher.on_trial_complete("t1", error=True)  # a second call for the same trial tells nothing
    assert searcher.failed == 3 and strategy.failed == 3
    assert [str(a) for a, _ in strategy.history] == [configs["t0"]["arch"]]  # only the result enters its model
    assert all(strategy.is_seen(space.parse(c["arch"])) for c in configs.values())  # never proposed again
    assert not strategy.pending


def training_error():
    """What Tune records when a candidate's training raises: the error inside a RayTaskError."""
    from ray.exceptions import RayTaskError

    return RayTaskError("train", "Traceback ...\nRuntimeError: injected fault", RuntimeError("injected fault"))


def lost_node_error():
    from ray.exceptions import ActorDiedError

    return ActorDiedError()  # "The actor died unexpectedly before finishing this task." (its node died)


def failed_trial(trial_id, config, folder, error, *, failures=1, checkpoint=None, last_result=None):
    """A trial that ended in error the way Tune leaves it: the error pickled and appended as text."""
    from ray import cloudpickle

    folder = folder / trial_id
    folder.mkdir()
    (folder / "error.pkl").write_bytes(cloudpickle.dumps(error))
    (folder / "error.txt").write_text(f"Failure # {failures} (occurred at 2026-12-01_20-25-45)\n{error}\n")
    return SimpleNamespace(trial_id=trial_id, config=dict(config), status="ERROR", checkpoint=checkpoint,
                           last_result=last_result or {}, error_file=str(folder / "error.txt"),
                           pickled_error_file=str(folder / "error.pkl"),
                           run_metadata=SimpleNamespace(num_failures=failures, invalidate_cache=lambda: None))


def test_a_candidate_lost_with_its_node_while_starting_is_proposed_again_not_failed(tmp_path):
    """Tune 2.60 retries only running trials: one whose node died while it was being started ends in
    error. The searcher proposes the candidate again (same architecture and number, from its last
    checkpoint, its failures carried); the strategy hears of the candidate once, when it finishes."""
    from ray import tune

    from frugalnas.runtime.tune_search import (CandidateRetries, StrategySearcher, TrialProgress,
                                               infrastructure_fault, latest_attempts, trial_outcome)
    from frugalnas.spaces import load_space

    space = load_space("nb201")
    strategy = make_strategy("random", space, seed=0)
    searcher = StrategySearcher(strategy, space, budget=3, max_failures=2)
    retries, lines = CandidateRetries(searcher), []
    progress = TrialProgress(lines.append, budget=3, searcher=searcher)
    configs = {t: searcher.suggest(t) for t in ("t1", "t2", "t3")}
    assert [c["suggestion"] for c in configs.values()] == [1, 2, 3]

    # t1: its reused actor's node died while it was reset for it, before any result. Tune processes that
    # one fault twice (requeued, then errored while pending): counted once
    lost = failed_trial("t1", configs["t1"], tmp_path, lost_node_error(), failures=2)
    assert infrastructure_fault(lost)
    retries.on_trial_recover(0, [], lost)
    searcher.on_trial_complete("t1", error=True)
    retries.on_trial_error(0, [], lost)
    progress.on_trial_error(0, [], lost)
    assert strategy.failed == 0 and not strategy.history  # the strategy was told nothing
    assert sorted(str(a) for a in strategy.pending) == sorted(c["arch"] for c in configs.values())
    assert lines == ["  candidate 1/3: The actor died unexpectedly before finishing this task.; retry 1 of 2, from "
                     "its checkpoint after epoch 0, as a new trial (lost while starting: Tune retries only running "
                     "trials)"]
    assert progress.finished == 0

    # t2: the candidate's own training raised (Tune's retries used up): failed, never proposed again
    crashed = failed_trial("t2", configs["t2"], tmp_path, training_error(), failures=3)
    assert not infrastructure_fault(crashed)
    searcher.on_trial_complete("t2", error=True)
    retries.on_trial_error(0, [], crashed)
    assert strategy.failed == 1 and searcher.failed == 1 and not searcher.superseded.get("t2")

    again = searcher.suggest("t4")  # the same candidate again, before any new one (the budget is spent anyway)
    assert again == {"arch": configs["t1"]["arch"], "suggestion": 1, "attempt": 2, "resume": None}
    assert searcher.suggested == 3
    assert searcher.suggest("t5") is None  # t3 and t4 still run: either may lose its node yet

    # t4 starts with the failures of the attempt it replaces; it finishes
    t4 = SimpleNamespace(trial_id="t4", config=again, status="TERMINATED", checkpoint=None, error_file=None,
                         last_result={"accuracy": 0.7, "epoch": 3},
                         run_metadata=SimpleNamespace(num_failures=0, invalidate_cache=lambda: None))
    retries.on_trial_start(0, [], t4)
    assert t4.run_metadata.num_failures == 1 and trial_outcome(t4)["retries"] == 1
    searcher.on_trial_complete("t4", {"accuracy": 0.7, "epoch": 3})
    searcher.on_trial_complete("t3", {"accuracy": 0.6, "epoch": 3})
    assert searcher.suggest("t6") == "FINISHED"

    # each candidate told once; its one row is its last attempt
    assert sorted(str(a) for a, _ in strategy.history) == sorted([configs["t1"]["arch"], configs["t3"]["arch"]])
    assert strategy.failed == 1 and not strategy.pending
    t3 = SimpleNamespace(trial_id="t3", config=configs["t3"])
    assert {t.trial_id for t in latest_attempts([lost, crashed, t3, t4])} == {"t2", "t3", "t4"}

    # a re-proposed attempt resumes from the checkpoint of the one it replaces
    checkpoint = tune.Checkpoint(str(tmp_path))
    searcher = StrategySearcher(make_strategy("random", space, seed=1), space, budget=1, max_failures=2)
    config = searcher.suggest("a")
    searcher.on_trial_complete("a", error=True)
    CandidateRetries(searcher).on_trial_error(0, [], failed_trial("a", config, tmp_path, lost_node_error(),
                                                                  checkpoint=checkpoint, last_result={"epoch": 2}))
    assert searcher.suggest("b")["resume"] == str(tmp_path)


def test_a_candidate_lost_once_too_often_fails_and_an_undecided_error_is_a_failure(tmp_path):
    from frugalnas.runtime.tune_search import CandidateRetries, StrategySearcher
    from frugalnas.spaces import load_space

    space = load_space("nb201")
    strategy = make_strategy("random", space, seed=0)
    searcher = StrategySearcher(strategy, space, budget=2, max_failures=1)
    first, second = searcher.suggest("t1"), searcher.suggest("t2")
    searcher.on_trial_complete("t1", error=True)  # its second loss: max_failures 1 is used up
    CandidateRetries(searcher).on_trial_error(0, [], failed_trial("t1", first, tmp_path, lost_node_error(),
                                                                  failures=2))
    assert strategy.failed == 1 and not searcher.retries
    searcher.on_trial_complete("t2", error=True)  # nobody read its error (no CandidateRetries): a failure
    assert searcher.suggest("t3") == "FINISHED" and strategy.failed == 2 and not strategy.pending
    assert second["suggestion"] == 2


def test_a_diverging_loss_stops_training_with_a_clear_error(digits_dataset):
    import torch

    from frugalnas.data.store import open_dataset
    from frugalnas.data.torch_dataset import ImageSplit
    from frugalnas.selection import make_selector
    from frugalnas.train.classify import SelectorTrainer, TrainingDiverged, TrainSettings

    train = ImageSplit(open_dataset(digits_dataset), "train")
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    trainer = SelectorTrainer(model, train, make_selector("full", train.ids, train.labels), TrainSettings(epochs=3,
                                                                                                         lr=1e30))
    with pytest.raises(TrainingDiverged, match=r"training loss became (nan|inf) in epoch [12] "):
        for _ in range(3):
            trainer.run_epoch()


def test_trial_outcomes_name_status_error_epochs_and_retries(tmp_path):
    from frugalnas.runtime.tune_search import error_summary, trial_outcome

    error = tmp_path / "error.txt"
    error.write_text("ray::ImplicitFunc.train() (pid=1, ip=127.0.0.1)\n  File \"x.py\", line 3, in f\n"
                     "frugalnas.train.classify.TrainingDiverged: the training loss became nan in epoch 2\n")

    def trial(status, result, failures, error_file=None):
        return SimpleNamespace(status=status, last_result=result, error_file=error_file,
                               run_metadata=SimpleNamespace(num_failures=failures))

    assert trial_outcome(trial("TERMINATED", {"accuracy": 0.5, "epoch": 3}, 1)) == {
        "status": "finished", "error": None, "epochs": 3, "retries": 1}
    diverged = trial_outcome(trial("ERROR", {"accuracy": 0.2, "epoch": 1}, 3, str(error)))
    assert diverged == {"status": "diverged", "epochs": 1, "retries": 2,
                        "error": "frugalnas.train.classify.TrainingDiverged: the training loss became nan in epoch 2"}
    assert trial_outcome(trial("TERMINATED", {"accuracy": float("nan"), "epoch": 2}, 0))["status"] == "failed"
    assert error_summary("Failure # 1 (occurred at 2026-12-01_20-25-45)\nThe actor died unexpectedly before finishing "
                         "this task.\n\tclass_name: ImplicitFunc\n\tpid: 12925\nThe actor died because its node has "
                         "died. Node Id: 07d1\n") == "The actor died because its node has died. Node Id: 07d1"
    assert error_summary("ray.exceptions.ActorDiedError: The actor died because its node has died.\n"
                         "\tclass_name: ImplicitFunc") == "ray.exceptions.ActorDiedError: The actor died because its " \
                                                           "node has died."


# ---------------------------------------------------------------- MLflow: no duplicates, nothing lost silently


def tracker_in(folder, resume=False):
    from frugalnas.track.location import check_reachable, resolve_location
    from frugalnas.track.runs import ExperimentTracker

    location = resolve_location(None, folder)
    check_reachable(location)
    return ExperimentTracker.start(location, "faults", folder, run_name="faults", tags={}, params={}, resume=resume)


def test_a_candidate_keeps_its_run_across_a_resume_and_no_epoch_is_logged_twice(tmp_path):
    tracker = tracker_in(tmp_path)
    run = tracker.candidate_run("3", name="candidate-003", arch="a", params={})
    assert tracker.log_epoch(run, {"accuracy": 0.1}, step=1) and tracker.log_epoch(run, {"accuracy": 0.2}, step=2)
    tracker.finish("KILLED")  # the driver died; Tune's saved state had the candidate at epoch 1

    resumed = tracker_in(tmp_path, resume=True)
    assert resumed.candidate_run("3", name="candidate-003", arch="a", params={}) == run  # same number, same arch
    assert not resumed.log_epoch(run, {"accuracy": 0.2}, step=2)  # reported again after resuming from epoch 1
    assert resumed.log_epoch(run, {"accuracy": 0.3}, step=3)
    assert [(m.step, m.value) for m in resumed.client.get_metric_history(run, "accuracy")] == [(1, 0.1), (2, 0.2),
                                                                                                (3, 0.3)]
    # a proposal the resumed search no longer makes: its run goes to MLflow's deleted runs
    orphan = resumed.candidate_run("4", name="candidate-004", arch="b", params={})
    again = tracker_in(tmp_path, resume=True)
    replacement = again.candidate_run("4", name="candidate-004", arch="c", params={})
    assert replacement != orphan and again.client.get_run(orphan).info.lifecycle_stage == "deleted"
    assert sorted(r.data.tags["frugalnas.arch"] for r in again.candidate_runs()) == ["a", "c"]


def test_what_the_store_failed_to_record_is_kept_for_the_summary(tmp_path):
    from frugalnas.runtime.experiment import record

    tracker = tracker_in(tmp_path)
    lines = []

    def broken():
        raise OSError(28, "No space left on device")

    assert record(tracker, "the final model", lines.append, broken) is None
    assert record(tracker, "summary.json", lines.append, lambda: "fine") == "fine"
    assert lines == ["tracking: MLflow did not record the final model (OSError: [Errno 28] No space left on device); "
                     "the experiment goes on"]
    resumed = tracker_in(tmp_path, resume=True)  # kept across --resume, in the output folder
    assert [(e["what"], e["error"]) for e in resumed.not_logged()] == [
        ("the final model", "OSError: [Errno 28] No space left on device")]


def test_a_store_that_cannot_be_written_fails_before_any_work(tmp_path, monkeypatch):
    import os

    from frugalnas.track.location import check_reachable, resolve_location
    from frugalnas.track.runs import ExperimentTracker

    location = resolve_location(None, tmp_path)
    full = os.statvfs_result((4096, 4096, 1000, 0, 10, 100, 0, 0, 0, 255))
    monkeypatch.setattr(os, "statvfs", lambda path: full)
    with pytest.raises(ConfigError, match="has 40,960 bytes free: its disk is full.*tracking.enabled: false"):
        check_reachable(location)
    monkeypatch.undo()

    import mlflow

    def refuse(*args, **kwargs):
        raise RuntimeError("(sqlite3.OperationalError) attempt to write a readonly database")

    monkeypatch.setattr(mlflow.MlflowClient, "create_experiment", refuse)
    with pytest.raises(ConfigError, match="cannot record the experiment in the MLflow tracking store sqlite:///.*"
                                          "readonly database. Is its disk full or read-only"):
        ExperimentTracker.start(location, "faults", tmp_path, run_name="x", tags={}, params={}, resume=False)


# ---------------------------------------------------------------- candidates that crash, diverge, lose their process


def reported_epochs(out, candidate: int) -> list[int]:
    """The epochs candidate ``candidate`` reported to Tune, in order, over all its retries."""
    (folder,) = [f for f in glob.glob(str(out / "tune" / "search" / "*" / "params.json"))
                 if json.loads(open(f).read())["suggestion"] == candidate]
    with open(folder.replace("params.json", "result.json")) as handle:
        return [json.loads(line)["epoch"] for line in handle if line.strip()]


def faulty_search(tmp_path, faults_at: dict[int, dict], **config):
    """A TINY search over the faulty-nb201 space whose candidates number ``n`` (1-based proposal
    order, known in advance: random search proposes the same architectures whatever the results)
    get the faults ``faults_at[n]``; returns (config, the architectures by candidate number)."""
    fault_injection.ship_to_ray_workers()
    from frugalnas.spaces import load_space

    space = load_space({"family": "faulty-nb201", "network": NETWORK})
    strategy = make_strategy("random", space, seed=0)
    archs = {n: str(strategy.ask()) for n in range(1, TINY["search"]["budget"] + 1)}
    faults = {archs[n]: fault for n, fault in faults_at.items()}
    space_file = tmp_path / "faulty.yaml"
    space_file.write_text(yaml.safe_dump({"family": "faulty-nb201", "network": NETWORK, "faults": faults}))
    return {**TINY, "space": str(space_file), **config}, archs


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_crashing_diverging_and_killed_candidates(tmp_path, ray_session):
    """Candidate 2 raises at its 2nd epoch (every time), candidate 3's loss becomes NaN at its 2nd
    epoch, candidate 4's worker process is SIGKILLed at its 2nd epoch (once). With max_failures 1:
    2 and 3 are recorded as failed after one retry each, 4 resumes from its epoch-1 checkpoint and
    finishes; the search goes on and ends with the five budgeted candidates."""
    config, archs = faulty_search(tmp_path, {2: {"kind": "raise", "step": 2}, 3: {"kind": "nan", "step": 2},
                                             4: {"kind": "kill", "step": 2, "marker": str(tmp_path / "killed")}})
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(config))
    result = CliRunner().invoke(cli, ["run", str(path), "--out", str(tmp_path / "out"), "--json"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "killed").exists()  # the kill happened
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    trials = {t["candidate"]: t for t in summary["trials"]}
    assert sorted(trials) == [1, 2, 3, 4, 5] and {n: t["arch"] for n, t in trials.items()} == archs

    crashed, diverged, killed = trials[2], trials[3], trials[4]
    assert crashed["status"] == "failed" and crashed["accuracy"] is None and crashed["epochs"] == 1
    assert crashed["retries"] == 1 and "RuntimeError: injected fault" in crashed["error"]
    assert diverged["status"] == "diverged" and diverged["accuracy"] is None and diverged["epochs"] == 1
    assert diverged["retries"] == 1 and "TrainingDiverged: the training loss became nan in epoch 2" in diverged["error"]
    for n in (1, 4, 5):
        assert trials[n]["status"] == "finished" and trials[n]["epochs"] == 3 and trials[n]["error"] is None
        assert 0 <= trials[n]["accuracy"] <= 1
    assert killed["retries"] == 1 and trials[1]["retries"] == trials[5]["retries"] == 0
    assert killed["images_processed"] == 3 * 60
    assert reported_epochs(tmp_path / "out", 4) == [1, 2, 3]  # its retry resumed after epoch 1, not from scratch
    assert reported_epochs(tmp_path / "out", 2) == [1]  # its retry resumed too, and crashed again in epoch 2
    assert summary["failed_candidates"] == [2, 3] and summary["candidate_retries"] == 3
    assert summary["best_arch"] in {archs[1], archs[4], archs[5]}
    accuracies = [t["accuracy"] for t in summary["trials"] if t["accuracy"] is not None]
    assert all(math.isfinite(a) for a in accuracies) and "NaN" not in (tmp_path / "out" / "summary.json").read_text()
    assert "candidate 3/5 (3 finished) diverged after 1 epoch(s)" in result.stderr
    assert "candidate 4/5: " in result.stderr and "retry 1 of 1" in result.stderr

    # the leaderboard lists the failures with what went wrong
    import click

    board = CliRunner().invoke(click.command()(lambda: _print_summary(summary)), []).output
    assert "2 candidate(s) failed" in board
    assert "   2 failed after 1 epoch(s), 1 retries: RuntimeError: injected fault" in board
    assert "   3 diverged after 1 epoch(s), 1 retries: " in board

    # the strategy was told each architecture once: three results, two failures
    state_file = sorted(glob.glob(str(tmp_path / "out" / "tune" / "search" / "searcher-state-*.pkl")))[-1]
    with open(state_file, "rb") as handle:
        strategy = pickle.load(handle)["strategy"]
    assert sorted(arch for arch, _ in strategy["history"]) == sorted([archs[1], archs[4], archs[5]])
    assert sorted(strategy["infeasible"]) == sorted([archs[2], archs[3]])
    assert strategy["counters"]["failed"] == 2 and strategy["counters"]["asked"] == 5 and not strategy["pending"]

    # MLflow: one run per candidate, each closed with its outcome; no NaN metric, no epoch twice
    import mlflow

    client = mlflow.MlflowClient(summary["tracking"]["uri"])
    runs = client.search_runs([summary["tracking"]["experiment_id"]],
                              filter_string=f"tags.mlflow.parentRunId = '{summary['tracking']['run_id']}'")
    by_number = {int(r.data.params["candidate"]): r for r in runs}
    assert sorted(by_number) == [1, 2, 3, 4, 5] and len(runs) == 5
    for n, run in by_number.items():
        status = trials[n]["status"]
        assert run.data.tags["frugalnas.arch"] == archs[n] and run.data.tags["frugalnas.status"] == status
        assert run.info.status == ("FINISHED" if status == "finished" else "FAILED")
        assert run.data.tags["frugalnas.epochs"] == str(trials[n]["epochs"])
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "accuracy")]
        assert steps == list(range(1, trials[n]["epochs"] + 1))
        assert all(math.isfinite(v) for v in run.data.metrics.values())
    assert "injected fault" in by_number[2].data.tags["frugalnas.error"]
    assert by_number[3].data.tags["frugalnas.error_summary"] == diverged["error"]
    assert by_number[4].data.tags["frugalnas.retries"] == "1"
    assert summary["tracking"]["not_logged"] == []
