"""MLflow tracking: where runs go, failing fast, parent/child runs, resume (fast: no training)."""
import pickle
import socket
import time

import pytest
import yaml
from click.testing import CliRunner

from frugalnas.cli import cli
from frugalnas.errors import ConfigError
from frugalnas.track.location import check_reachable, embedded_paths, resolve_location
from frugalnas.track.runs import ExperimentTracker, flatten, param_name


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_default_is_an_embedded_store_inside_the_output_folder(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    location = resolve_location(None, tmp_path / "out")
    database, artifacts = embedded_paths(tmp_path / "out")
    assert location.embedded and location.uri == f"sqlite:///{database}"
    assert database == (tmp_path / "out" / "mlflow" / "mlflow.db").resolve() and database.is_absolute()
    assert location.artifact_location == artifacts.as_uri()


def test_environment_uri_is_used_when_the_config_has_none(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://tracking.example:5000")
    assert resolve_location(None, tmp_path).uri == "http://tracking.example:5000"
    assert resolve_location("sqlite:////abs/m.db", tmp_path).uri == "sqlite:////abs/m.db"  # the config wins


@pytest.mark.parametrize("uri, message", [
    ("ftp://host/x", "allowed schemes: http, https, sqlite"),
    ("mlflow.db", "is not an MLflow tracking URI"),
    ("sqlite:///relative.db", "relative SQLite path"),
])
def test_bad_uris_are_refused_with_what_is_allowed(tmp_path, uri, message):
    with pytest.raises(ConfigError, match=message):
        resolve_location(uri, tmp_path)


def test_a_server_that_is_down_fails_fast(tmp_path):
    location = resolve_location(f"http://127.0.0.1:{closed_port()}", tmp_path)
    started = time.perf_counter()
    with pytest.raises(ConfigError, match="does not answer") as error:
        check_reachable(location)
    assert time.perf_counter() - started < 10
    assert location.uri in str(error.value)


def test_run_with_an_unreachable_server_stops_before_any_training(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    config = {"name": "down", "space": {"name": "nb201", "network": {"channels": 4, "cells_per_stage": 1}},
              "tracking": {"uri": f"http://127.0.0.1:{closed_port()}"}}
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(config))
    result = CliRunner().invoke(cli, ["run", str(path), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2, result.output
    assert "does not answer" in result.output and "tracking.uri" in result.output
    assert not (tmp_path / "out" / "dataset").exists()  # nothing was ingested, let alone trained


def test_flatten_and_param_names():
    assert flatten({"a": {"b": 1, "c": [1, 2]}, "d": None, "e": {}}) == {"a.b": 1, "a.c": "[1, 2]", "d": None,
                                                                         "e": "{}"}
    assert param_name("2<-1") == "2-from-1"
    assert param_name("cell[0]/op") == "cell_0_/op"


def start(tmp_path, resume=False):
    location = resolve_location(None, tmp_path)
    check_reachable(location)
    return ExperimentTracker.start(location, "unit", tmp_path, run_name="unit", tags={"strategy": "random"},
                                   params={"search.budget": 3}, resume=resume)


def test_candidate_runs_nest_under_the_parent_and_are_found_again_after_a_restart(tmp_path):
    tracker = start(tmp_path)
    first = tracker.candidate_run("trial_1", name="candidate-001", arch="a", params={"arch.x": "1"})
    assert tracker.candidate_run("trial_1", name="candidate-001", arch="a", params={}) == first
    tracker.log_metrics(first, {"accuracy": 0.5, "flag": True}, step=1)
    # what Tune does with callbacks: pickle them with the experiment, unpickle on restore
    revived = pickle.loads(pickle.dumps(tracker))
    assert revived._client is None
    assert revived.candidate_run("trial_1", name="candidate-001", arch="a", params={}) == first
    run = tracker.client.get_run(first)
    assert run.data.tags["mlflow.parentRunId"] == tracker.parent_run_id
    assert run.data.tags["frugalnas.role"] == "candidate" and run.data.tags["frugalnas.arch"] == "a"
    assert run.data.params == {"arch.x": "1", "strategy": "random"}
    assert run.data.metrics == {"accuracy": 0.5}  # booleans are not metrics

    tracker.finish("KILLED")
    resumed = start(tmp_path, resume=True)
    assert resumed.parent_run_id == tracker.parent_run_id  # --resume continues the same parent run
    assert resumed.client.get_run(resumed.parent_run_id).info.status == "RUNNING"
    assert [r.info.run_id for r in resumed.candidate_runs()] == [first]
    fresh_folder = tmp_path / "other"
    fresh_folder.mkdir()
    assert start(fresh_folder).parent_run_id != tracker.parent_run_id


def test_a_dashboard_address_in_ray_address_is_explained(tmp_path, monkeypatch):
    """`export RAY_ADDRESS=http://...:8265` is right for `ray job submit`, wrong for a local run."""
    monkeypatch.setenv("RAY_ADDRESS", "http://127.0.0.1:8265")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump({"name": "addr", "space": {"name": "nb201", "network": {"channels": 4}}}))
    result = CliRunner().invoke(cli, ["run", str(path), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2 and "dashboard address" in result.output and "ray job submit" in result.output
    assert not (tmp_path / "out" / "dataset").exists()


@pytest.mark.parametrize("before", [None, "http://elsewhere:5000"])
def test_logging_the_model_leaves_the_global_tracking_uri_as_it_was(tmp_path, monkeypatch, before):
    import os

    import mlflow
    import torch

    if before is None:
        monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    else:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", before)
    location = resolve_location(f"sqlite:///{tmp_path / 'm.db'}", tmp_path)
    tracker = ExperimentTracker.start(location, "model", tmp_path, run_name="m", tags={}, params={}, resume=False)
    assert tracker.log_model(torch.nn.Linear(2, 1), registered_name="model") == "1"
    assert os.environ.get("MLFLOW_TRACKING_URI") == before
    if before is None:
        assert str(tmp_path) not in mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(None)


def test_a_tracking_failure_mid_search_is_reported_and_the_search_goes_on(tmp_path):
    from types import SimpleNamespace

    from frugalnas.runtime.tracking import CandidateTracking
    from frugalnas.spaces import load_space

    class ServerGone:
        def __getattr__(self, name):
            def fail(*args, **kwargs):
                raise ConnectionError("connection refused")
            return fail

    tracker = start(tmp_path)
    tracker._client = ServerGone()
    space = load_space("nb201")
    trial = SimpleNamespace(config={"arch": str(space.sample(__import__("numpy").random.default_rng(0))),
                                    "suggestion": 7}, trial_id="t7")
    lines = []
    callback = CandidateTracking(tracker, space, lines.append)
    callback.on_trial_start(0, [], trial)
    callback.on_trial_result(0, [], trial, {"accuracy": 0.5, "epoch": 1})
    assert callback.failures == 2
    assert len(lines) == 2 and "candidate 7" in lines[0] and "ConnectionError: connection refused" in lines[0]
    assert "the search goes on" in lines[0]


def test_accuracy_size_front_keeps_the_candidates_nothing_beats_on_both():
    from frugalnas.track.experiment import accuracy_size_front

    trials = [{"arch": "a", "accuracy": 0.9, "params": 100}, {"arch": "b", "accuracy": 0.8, "params": 50},
              {"arch": "c", "accuracy": 0.7, "params": 80}, {"arch": "d", "accuracy": None, "params": 10},
              {"arch": "e", "accuracy": 0.9, "params": 120}]
    assert [t["arch"] for t in accuracy_size_front(trials)] == ["a", "b"]
