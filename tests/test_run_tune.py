"""End to end: `frugalnas run` with ask/tell strategies through Ray Tune (slow: real training)."""
import json

import pytest
import yaml
from click.testing import CliRunner

from frugalnas.cli import cli

TINY = {
    "name": "tiny",
    "seed": 0,
    "dataset": {"source": "digits", "codec": "png", "val_fraction": 0.15},
    "embedding": {"kind": "triplet", "latent_dim": 4, "epochs": 1, "image_size": 8},
    "selection": {"policy": "dds", "subset_size": 60, "warmup_epochs": 1, "mastery": 0.3, "index": "exact"},
    "space": {"name": "nb201", "network": {"channels": 4, "cells_per_stage": 1, "stages": 2}},
    "search": {"strategy": "evolution", "budget": 4, "scheduler": "fifo", "epochs_per_candidate": 2},
    "final": {"epochs": 1},
    "resources": {"cpus_per_trial": 1, "max_concurrent_trials": 1},
}


def run_config(tmp_path, config, *extra):
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(config))
    result = CliRunner().invoke(cli, ["run", str(path), "--out", str(tmp_path / "out"), "--json", *extra])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout.strip().splitlines()[-1]), result


@pytest.mark.slow
def test_run_evolution_with_dds_through_tune(tmp_path, ray_session):
    summary, result = run_config(tmp_path, TINY)
    for key in ("experiment", "strategy", "selection", "space", "best_arch", "search_images_processed",
                "search_wall_seconds", "final_test_accuracy", "final_params"):
        assert key in summary
    assert summary["strategy"] == "evolution" and summary["selection"] == "dds"
    trials = summary["trials"]
    assert len(trials) == 4 and len({t["arch"] for t in trials}) == 4
    # dds trains at most subset_size images per epoch of each candidate
    assert all(0 < t["images_processed"] <= 60 * 2 for t in trials)
    assert summary["search_images_processed"] == sum(t["images_processed"] for t in trials)
    assert summary["best_arch"] == max(trials, key=lambda t: t["accuracy"])["arch"]
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["best_arch"] == summary["best_arch"]
    assert "candidate 4/4" in result.stderr


@pytest.mark.slow
@pytest.mark.parametrize("scheduler", ["asha", "hyperband"])
def test_schedulers_stop_or_pause_candidates_early(tmp_path, ray_session, scheduler):
    config = {**TINY, "selection": {"policy": "random", "subset_size": 60},
              "search": {"strategy": "random", "budget": 6, "scheduler": scheduler, "epochs_per_candidate": 4},
              "resources": {"cpus_per_trial": 1, "max_concurrent_trials": 2}}
    summary, _ = run_config(tmp_path, config)
    epochs = [t["epochs"] for t in summary["trials"]]
    assert len(epochs) == 6 and max(epochs) == 4
    if scheduler == "asha":
        assert min(epochs) < 4  # some poor candidates were stopped early


@pytest.mark.slow
def test_multi_objective_gives_a_pareto_front(tmp_path, ray_session):
    config = {**TINY, "selection": {"policy": "random", "subset_size": 60},
              "search": {"strategy": "optuna-nsga2", "budget": 5, "scheduler": "fifo", "epochs_per_candidate": 1,
                         "objectives": ["accuracy", "-params"], "constraints": {"max_params": 20000}}}
    summary, _ = run_config(tmp_path, config)
    front = summary["pareto_front"]
    assert front and all(t["params"] <= 20000 for t in summary["trials"])
    for a in front:
        assert not any(b["accuracy"] >= a["accuracy"] and b["params"] <= a["params"]
                       and (b["accuracy"] > a["accuracy"] or b["params"] < a["params"]) for b in front)


@pytest.mark.slow
def test_interrupted_search_resumes_without_repeating_and_matches_uninterrupted(tmp_path):
    """Ctrl+C after two candidates, then `--resume`: same trials as a run never stopped."""
    import os
    import signal
    import subprocess
    import sys
    import time

    config = {**TINY, "selection": {"policy": "random", "subset_size": 60},
              "search": {"strategy": "evolution", "budget": 5, "scheduler": "fifo", "epochs_per_candidate": 2}}
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(config))
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "frugalnas.cli", "run", str(path), "--json"]

    straight = subprocess.run(command + ["--out", str(tmp_path / "straight")], capture_output=True, text=True, env=env,
                              timeout=600)
    assert straight.returncode == 0, straight.stderr[-3000:]

    interrupted = subprocess.Popen(command + ["--out", str(tmp_path / "resumed")], stderr=subprocess.PIPE, text=True,
                                   env=env, stdout=subprocess.DEVNULL)
    deadline = time.time() + 600
    for line in interrupted.stderr:
        if "candidate 2/5" in line or time.time() > deadline:
            break
    interrupted.send_signal(signal.SIGINT)  # what Ctrl+C does: Tune saves its state and stops
    interrupted.wait(timeout=300)
    assert not (tmp_path / "resumed" / "summary.json").exists()

    resumed = subprocess.run(command + ["--out", str(tmp_path / "resumed"), "--resume"], capture_output=True,
                             text=True, env=env, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming" in resumed.stderr
    a = json.loads(straight.stdout.strip().splitlines()[-1])
    b = json.loads(resumed.stdout.strip().splitlines()[-1])
    archs_a = sorted(t["arch"] for t in a["trials"])
    archs_b = sorted(t["arch"] for t in b["trials"])
    assert len(archs_b) == len(set(archs_b)) == 5  # nothing proposed twice because of the restart
    assert archs_a == archs_b
    assert a["best_arch"] == b["best_arch"]
    assert {t["arch"]: t["accuracy"] for t in a["trials"]} == {t["arch"]: t["accuracy"] for t in b["trials"]}

    # MLflow: the resumed run continued the same experiment run and the same candidate runs
    import mlflow

    client = mlflow.MlflowClient(b["tracking"]["uri"])
    runs = client.search_runs([b["tracking"]["experiment_id"]])
    parents = [r for r in runs if r.data.tags["frugalnas.role"] == "experiment"]
    children = [r for r in runs if r.data.tags["frugalnas.role"] == "candidate"]
    assert [p.info.run_id for p in parents] == [b["tracking"]["run_id"]] and parents[0].info.status == "FINISHED"
    assert sorted(c.data.tags["frugalnas.arch"] for c in children) == archs_b
    assert all(c.info.status == "FINISHED" for c in children)


@pytest.mark.slow
def test_ctrl_c_during_the_last_candidate_is_reported_as_interrupted(tmp_path):
    """The interrupt arrives while the last candidate trains: fit() returns all trials, and the run
    must still say it was interrupted (not derive and retrain from an incomplete search)."""
    import os
    import signal
    import subprocess
    import sys
    import time

    config = {**TINY, "selection": {"policy": "full"},
              "search": {"strategy": "random", "budget": 3, "scheduler": "fifo", "epochs_per_candidate": 100}}
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(config))
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "frugalnas.cli", "run", str(path), "--out", str(tmp_path / "out")]
    run = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=env, stdout=subprocess.DEVNULL)
    deadline, seen = time.time() + 600, []
    for line in run.stderr:
        seen.append(line)
        if "candidate 2/3" in line or time.time() > deadline:
            break
    time.sleep(3)  # the third (last) candidate is training now: 100 full epochs take far longer
    run.send_signal(signal.SIGINT)
    rest = run.communicate(timeout=300)[1]
    assert run.returncode == 2, "".join(seen) + rest
    assert "--resume" in rest and "after 2 of 3 candidates" in rest
    assert not (tmp_path / "out" / "summary.json").exists()
