"""`frugalnas ui`: the MLflow UI on an experiment's embedded store.

Fast tests cover the errors and the server command; the slow test serves a real store with the
real command and looks at the pages in headless Chromium, as a user would."""
from __future__ import annotations

import html
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

import pytest
from click.testing import CliRunner

from frugalnas.cli import cli
from frugalnas.track.ui import (LEADERBOARD_VIEW, compare_runs_fragment, experiment_name, experiment_url, find_store,
                                leaderboard_fragment, leaderboard_view_state, newest_store, server_command,
                                share_leaderboard_view, stop_process_group, store_paths)
from mlflow_support import ensure_chromium, free_port, render_dom


def invoke(*args):
    return CliRunner().invoke(cli, ["ui", *args], catch_exceptions=False)


def make_store_file(out: Path) -> None:
    """An (empty) embedded store file: enough for the command to find the store."""
    (out / "mlflow").mkdir(parents=True)
    (out / "mlflow" / "mlflow.db").touch()


def test_missing_store_fails_with_exit_2_naming_the_folder(tmp_path):
    result = invoke("--out", str(tmp_path))
    assert result.exit_code == 2
    assert f"no MLflow store in {tmp_path}" in result.output
    assert "frugalnas run" in result.output


def test_missing_output_folder_fails_with_exit_2(tmp_path):
    result = invoke("--out", str(tmp_path / "nope"))
    assert result.exit_code == 2
    assert f"output folder {tmp_path / 'nope'} does not exist" in result.output


def test_experiment_tracked_to_a_server_points_to_that_server(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"name": "x", "tracking": {"uri": "http://mlflow:5000"}}))
    result = invoke("--out", str(tmp_path))
    assert result.exit_code == 2
    assert "tracked to the MLflow server http://mlflow:5000" in result.output


def test_default_out_without_any_store_under_runs_fails(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs" / "empty").mkdir(parents=True)
    result = invoke()
    assert result.exit_code == 2
    assert f"no output folder under {tmp_path / 'runs'} has an MLflow store" in result.output


def test_default_out_is_the_store_written_last(tmp_path):
    for name, mtime in (("old", 1_000_000), ("new", 2_000_000), ("older", 500_000)):
        make_store_file(tmp_path / name)
        db = tmp_path / name / "mlflow" / "mlflow.db"
        os.utime(db, (mtime, mtime))
    assert newest_store(tmp_path).out == (tmp_path / "new").resolve()
    assert find_store(tmp_path / "old").db == (tmp_path / "old" / "mlflow" / "mlflow.db").resolve()


def test_port_in_use_fails_with_exit_2(tmp_path):
    make_store_file(tmp_path)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = invoke("--out", str(tmp_path), "--port", str(port))
    assert result.exit_code == 2
    assert f"cannot listen on 127.0.0.1:{port}" in result.output and "--port" in result.output


def test_experiment_name_prefers_tracking_experiment(tmp_path):
    assert experiment_name(tmp_path) is None
    (tmp_path / "config.json").write_text(json.dumps({"name": "quick", "tracking": {"experiment": None}}))
    assert experiment_name(tmp_path) == "quick"
    (tmp_path / "config.json").write_text(json.dumps({"name": "quick", "tracking": {"experiment": "nas-1"}}))
    assert experiment_name(tmp_path) == "nas-1"


def test_server_command_serves_the_store_with_flags_mlflow_accepts(tmp_path):
    store = store_paths(tmp_path / "out")
    command = server_command(store, host="0.0.0.0", port=5123)
    assert command == [sys.executable, "-m", "mlflow", "server",
                       "--backend-store-uri", f"sqlite:///{tmp_path}/out/mlflow/mlflow.db",
                       "--artifacts-destination", f"{tmp_path}/out/mlflow/artifacts",
                       "--host", "0.0.0.0", "--port", "5123", "--workers", "1"]
    assert command[5].startswith("sqlite:////")  # four slashes: an absolute path
    usage = subprocess.run([sys.executable, "-m", "mlflow", "server", "--help"], capture_output=True, text=True,
                           check=True).stdout
    for flag in (part for part in command[4:] if part.startswith("--")):
        assert re.search(rf"^\s+(-\w, )?{flag}\b", usage, re.M), f"mlflow server has no {flag} option"


def test_compare_fragment_is_a_markdown_safe_encoding_of_the_json_lists():
    fragment = compare_runs_fragment(["a1", "b2"], ["7"])
    assert fragment.startswith("#/compare-runs?runs=")
    assert not set(fragment) & set(' "()[]<>')  # nothing that ends or breaks a markdown link
    query = urllib.parse.parse_qs(fragment.split("?", 1)[1])
    assert json.loads(query["runs"][0]) == ["a1", "b2"]
    assert json.loads(query["experiments"][0]) == ["7"]


def test_experiment_url_opens_the_runs_table_sorted_by_accuracy():
    url = experiment_url("http://127.0.0.1:5000", "3")
    path, query = url.split("?", 1)
    assert path == "http://127.0.0.1:5000/#/experiments/3/runs"
    assert urllib.parse.parse_qs(query) == {"workflowType": ["machine_learning"], "orderByKey": ["metrics.`accuracy`"],
                                            "orderByAsc": ["false"]}
    # the leaderboard view carries the sort itself: a sort parameter beside it would make the UI ignore it
    query = urllib.parse.parse_qs(experiment_url("http://h:1", "3", view=LEADERBOARD_VIEW).split("?", 1)[1])
    assert query == {"workflowType": ["machine_learning"], "viewStateShareKey": [LEADERBOARD_VIEW]}
    assert leaderboard_fragment("3") == "#/experiments/3/runs?workflowType=machine_learning&viewStateShareKey=" \
                                        + LEADERBOARD_VIEW
    assert not set(leaderboard_fragment("3")) & set(' "()[]<>')


def test_leaderboard_view_puts_score_and_cost_columns_first():
    state = leaderboard_view_state()
    assert state["selectedColumns"] == state["columnOrder"] == [
        "metrics.`accuracy`", "metrics.`images_processed`", "metrics.`params`", "metrics.`flops`", "metrics.`seconds`"]
    assert state["orderByKey"] == "metrics.`accuracy`" and state["orderByAsc"] is False


CANDIDATES = ("cand-a", "cand-b", "cand-c")
LINK_TEXT = "Compare the candidates side by side"


def write_experiment(out: Path) -> tuple[str, list[str]]:
    """An embedded store shaped like a frugalnas search: a parent run and three nested candidates.

    The experiment description links to the comparison of the candidates."""
    from mlflow.tracking import MlflowClient

    store = store_paths(out)
    store.artifacts.mkdir(parents=True)
    client = MlflowClient(tracking_uri=store.backend_uri)
    experiment_id = client.create_experiment("uitest", artifact_location=store.artifacts.as_uri())
    parent = client.create_run(experiment_id, run_name="search", tags={"frugalnas.role": "experiment"})
    run_ids = []
    for i, name in enumerate(CANDIDATES):
        run = client.create_run(experiment_id, run_name=name, tags={
            "mlflow.parentRunId": parent.info.run_id, "frugalnas.role": "candidate",
            "strategy": "evolution", "selector": "dds"})
        client.log_metric(run.info.run_id, "accuracy", 0.6 + i / 10)
        client.log_metric(run.info.run_id, "images_processed", 1000 * (i + 1))
        client.log_metric(run.info.run_id, "params", 5000 * (i + 1))
        client.set_terminated(run.info.run_id)
        run_ids.append(run.info.run_id)
    client.set_terminated(parent.info.run_id)
    share_leaderboard_view(client, experiment_id)
    client.set_experiment_tag(experiment_id, "mlflow.note.content",
                              f"Search on digits. [{LINK_TEXT}]({compare_runs_fragment(run_ids, [experiment_id])})")
    (out / "config.json").write_text(json.dumps({"name": "uitest", "tracking": {"uri": None, "experiment": None}}))
    return experiment_id, run_ids


def wait_for_line(log: Path, prefix: str, process: subprocess.Popen, timeout: float = 150.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in log.read_text(errors="replace").splitlines():
            if line.startswith(prefix):
                return line
        if process.poll() is not None:
            break
        time.sleep(0.5)
    raise AssertionError(f"`frugalnas ui` printed no line starting {prefix!r} (exit code {process.poll()}); "
                         f"output:\n{log.read_text(errors='replace')[-4000:]}")


@pytest.mark.slow
def test_ui_shows_the_candidates_and_compares_them_from_one_link(tmp_path):
    ensure_chromium()
    out = tmp_path / "out"
    experiment_id, run_ids = write_experiment(out)
    port = free_port()
    log = tmp_path / "ui.log"
    with open(log, "wb") as sink:
        ui = subprocess.Popen([sys.executable, "-m", "frugalnas", "ui", "--out", str(out), "--port", str(port)],
                              stdout=sink, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        page = wait_for_line(log, "experiment 'uitest': ", ui).split(": ", 1)[1]
        assert page == experiment_url(f"http://127.0.0.1:{port}", experiment_id, view=LEADERBOARD_VIEW)
        wait_for_line(log, "ready", ui)

        # The experiment page: the candidates as a flat table, and the description with the link.
        dom = render_dom(page, expect=(*CANDIDATES, "images_processed"))
        for name in (*CANDIDATES, "search", "Search on digits"):
            assert name in dom, f"{name!r} is not on the experiment page"
        # The leaderboard view: the score and cost columns right after the run name and creation time,
        # instead of MLflow's default Dataset, Duration, Source, Models columns (which push them off screen)
        headers = [h.strip() for h in re.findall(r'role="columnheader"[^>]*>(?:<[^>]*>)*([^<]+)<', dom) if h.strip()]
        assert "You're viewing a shared view" in html.unescape(dom)
        assert headers[:5] == ["Run Name", "Created", "accuracy", "images_processed", "params"], headers
        for column in ("Dataset", "Duration", "Source", "Models"):
            assert column not in headers, f"the default column {column!r} is still shown: {headers}"
        links = [html.unescape(href) for href, text in re.findall(r'<a [^>]*href="([^"]*)"[^>]*>([^<]*)</a>', dom)
                 if text == LINK_TEXT]
        assert links == [compare_runs_fragment(run_ids, [experiment_id])]

        # One click: the link, resolved against the experiment page, opens the comparison.
        compare = render_dom(urllib.parse.urljoin(page, links[0]), expect=(*CANDIDATES, "accuracy"))
        assert "Comparing 3 Runs from 1 Experiment" in compare
        for text in (*CANDIDATES, *run_ids, "accuracy", "images_processed", "strategy", "selector"):
            assert text in compare, f"{text!r} is not on the compare page"

        # Ctrl+C / SIGTERM to the command stops the server it started (its own process group).
        ui.send_signal(signal.SIGTERM)
        assert ui.wait(timeout=60) == 0
        with socket.socket() as probe:
            assert probe.connect_ex(("127.0.0.1", port)) != 0, "the MLflow server outlived `frugalnas ui`"
    finally:
        stop_process_group(ui)
