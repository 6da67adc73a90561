"""A killed driver: SIGKILL to the whole process group of `frugalnas run` mid-search (no handler
runs, its local Ray dies with it), then the same command with `--resume`. The result must be the
one an uninterrupted run gives: for a Tune search the same candidates and results, each candidate
told to the strategy and evaluated once, one MLflow run each; for DARTS the same supernet, alphas
and selector path, continued from the last checkpoint (slow: real searches)."""
from __future__ import annotations

import glob
import json
import os
import pickle
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from frugalnas.cli import cli
from ray_cluster_support import kill_process_group, own_ray_dir

TUNE = {
    "name": "killed",
    "seed": 0,
    "dataset": {"source": "digits", "codec": "png", "val_fraction": 0.15},
    "selection": {"policy": "random", "subset_size": 200},
    "space": {"name": "nb201", "network": {"channels": 4, "cells_per_stage": 1, "stages": 2}},
    "search": {"strategy": "evolution", "budget": 5, "scheduler": "fifo", "epochs_per_candidate": 4,
               "params": {"population_size": 3, "sample_size": 2}},
    "final": {"epochs": 1},
    "resources": {"cpus_per_trial": 1, "max_concurrent_trials": 1},  # exactly reproducible
}
DARTS = {
    "name": "killed-darts",
    "seed": 0,
    "dataset": {"source": "digits", "codec": "png", "val_fraction": 0.15},
    "embedding": {"kind": "triplet", "latent_dim": 4, "epochs": 1, "image_size": 8},
    "selection": {"policy": "dds", "subset_size": 50, "warmup_epochs": 1, "mastery": 0.2, "index": "exact"},
    "space": {"name": "nb201", "network": {"channels": 4, "cells_per_stage": 1, "stages": 2},
              "supernet": {"channels": 4, "cells_per_stage": 1, "stages": 2}},
    "search": {"strategy": "darts", "epochs_per_candidate": 5},
    "final": {"epochs": 1, "batch_size": 25},
    "resources": {"workers": 1},
}


def uninterrupted(tmp_path, config) -> dict:
    """The reference: the same config run through without a fault (in this process)."""
    path = tmp_path / "straight.yaml"
    path.write_text(yaml.safe_dump(config))
    result = CliRunner().invoke(cli, ["run", str(path), "--out", str(tmp_path / "straight"), "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout.strip().splitlines()[-1])


def killed_then_resumed(tmp_path, config, ready, check_killed=lambda out: None) -> tuple[dict, str]:
    """Start `frugalnas run` in a process group of its own (its own local Ray under a temp dir), SIGKILL
    the group once ``ready(out)`` holds, check that no process of it is left and ``check_killed(out)``,
    then run the same command with --resume; returns (the resumed run's summary, its stderr)."""
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(config))
    out = tmp_path / "out"
    command = [sys.executable, "-m", "frugalnas.cli", "run", str(path), "--out", str(out), "--json"]
    with own_ray_dir() as ray_dir:
        env = {**{k: v for k, v in os.environ.items() if not k.startswith(("RAY_ADDRESS", "MLFLOW_"))},
               "RAY_TMPDIR": str(ray_dir), "RAY_USAGE_STATS_ENABLED": "0", "PYTHONUNBUFFERED": "1"}
        with open(tmp_path / "killed.log", "w") as log:
            run = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        deadline = time.monotonic() + 600
        while not ready(out):
            assert run.poll() is None, (tmp_path / "killed.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "the search never got to the point of the kill"
            time.sleep(0.2)
        kill_process_group(run)
    # own_ray_dir checked on exit that every process of the killed run's Ray is gone
    assert not (out / "summary.json").exists()
    check_killed(out)
    with own_ray_dir() as ray_dir:
        resumed = subprocess.run(command + ["--resume"], capture_output=True, text=True, timeout=900,
                                 env={**env, "RAY_TMPDIR": str(ray_dir)})
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    return json.loads(resumed.stdout.strip().splitlines()[-1]), resumed.stderr


def saved_epochs(out: Path) -> dict[int, int]:
    """candidate -> the epochs it had reported, in the search state Tune last saved ({} while none is
    readable: a state file being written)."""
    states = sorted(glob.glob(str(out / "tune" / "search" / "experiment_state-*.json")))
    try:
        trials = json.loads(Path(states[-1]).read_text())["trial_data"] if states else []
        return {json.loads(trial)["config"]["suggestion"]: json.loads(meta)["last_result"].get("epoch", 0)
                for trial, meta in trials}
    except (ValueError, KeyError, TypeError):
        return {}


def trial_results(out: Path) -> dict[str, list[list[int]]]:
    """arch -> the epochs each Tune trial of that architecture reported (one list per trial)."""
    found: dict[str, list[list[int]]] = {}
    for params in glob.glob(str(out / "tune" / "search" / "*" / "params.json")):
        arch = json.loads(Path(params).read_text())["arch"]
        result = Path(params).with_name("result.json")
        epochs = [json.loads(line)["epoch"] for line in result.read_text().splitlines() if line.strip()] \
            if result.exists() else []
        found.setdefault(arch, []).append(epochs)
    return found


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_a_killed_search_resumes_to_the_uninterrupted_result(tmp_path, ray_session):
    straight = uninterrupted(tmp_path, TUNE)

    def third_candidate_saved(out: Path) -> bool:
        """Candidate 3 has reported an epoch and the search's saved state (saved every second) knows it:
        the kill lands mid-candidate, and the resumed search must continue candidate 3, not redo it."""
        return saved_epochs(out).get(3, 0) >= 1

    summary, log = killed_then_resumed(tmp_path, TUNE, third_candidate_saved)
    assert "search: resuming" in log
    key = lambda t: (t["candidate"], t["arch"], t["accuracy"], t["epochs"], t["images_processed"])  # noqa: E731
    assert sorted(map(key, summary["trials"])) == sorted(map(key, straight["trials"]))
    assert summary["best_arch"] == straight["best_arch"]
    assert summary["final_test_accuracy"] == straight["final_test_accuracy"]

    # evaluated once: no architecture was trained by two trials; candidate 3 went on from its checkpoint
    out = tmp_path / "out"
    trained = {arch: [e for e in runs if e] for arch, runs in trial_results(out).items()}
    assert sorted(trained) == sorted(t["arch"] for t in straight["trials"])
    assert all(len(runs) == 1 for runs in trained.values()), trained
    (third,) = [t["arch"] for t in straight["trials"] if t["candidate"] == 3]
    assert trained[third][0].count(1) == 1 and trained[third][0][-1] == 4  # never restarted from scratch

    # told to the strategy once each
    state_file = sorted(glob.glob(str(out / "tune" / "search" / "searcher-state-*.pkl")))[-1]
    with open(state_file, "rb") as handle:
        strategy = pickle.load(handle)["strategy"]
    assert sorted(arch for arch, _ in strategy["history"]) == sorted(trained)
    assert strategy["counters"]["asked"] == 5 and not strategy["pending"]

    # MLflow: the same experiment run, one finished run per candidate, every epoch logged once
    import mlflow
    from mlflow.entities import ViewType

    client = mlflow.MlflowClient(summary["tracking"]["uri"])
    runs = client.search_runs([summary["tracking"]["experiment_id"]], run_view_type=ViewType.ALL)
    parents = [r for r in runs if r.data.tags["frugalnas.role"] == "experiment"]
    children = [r for r in runs if r.data.tags["frugalnas.role"] == "candidate"]
    assert [p.info.run_id for p in parents] == [summary["tracking"]["run_id"]] and parents[0].info.status == "FINISHED"
    assert sorted(c.data.tags["frugalnas.arch"] for c in children) == sorted(trained)
    for child in children:
        assert child.info.status == "FINISHED" and child.info.lifecycle_stage == "active"
        assert [m.step for m in client.get_metric_history(child.info.run_id, "accuracy")] == [1, 2, 3, 4]


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_a_killed_darts_search_resumes_from_its_last_checkpoint(tmp_path, ray_session):
    from frugalnas.runtime.darts_trainer import SNAPSHOT_FILE

    straight = uninterrupted(tmp_path, DARTS)
    snapshot = lambda out: out / "ray-train" / "darts" / SNAPSHOT_FILE  # noqa: E731  (written with a checkpoint)

    def mid_search(out: Path) -> None:  # the last checkpoint of the killed run is not the end of the search
        metrics = json.loads(snapshot(out).read_text())["latest_checkpoint_result"]["metrics"]
        assert not metrics["done"] and metrics["epoch"] + 1 < DARTS["search"]["epochs_per_candidate"], metrics

    summary, log = killed_then_resumed(tmp_path, DARTS, lambda out: snapshot(out).exists(), mid_search)
    assert "search: resuming the supernet" in log
    assert summary["alphas"] == straight["alphas"]  # bit for bit: weights, optimisers, alphas and selector restored
    assert summary["best_arch"] == straight["best_arch"]
    strip = lambda history: [{k: v for k, v in r.items() if "seconds" not in k} for r in history]  # noqa: E731
    assert strip(summary["history"]) == strip(straight["history"])
    assert summary["weight_images_processed"] == straight["weight_images_processed"]
    assert summary["arch_images_processed"] == straight["arch_images_processed"]
    assert summary["subset_updates"] == straight["subset_updates"]
