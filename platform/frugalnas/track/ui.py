"""`frugalnas ui`: browse an experiment's embedded MLflow store in the MLflow UI.

An experiment run without a tracking server keeps its MLflow store inside its output folder:
``<OUT>/mlflow/mlflow.db`` (runs, metrics, tags, registered models) and ``<OUT>/mlflow/artifacts``.
The UI is MLflow's own (``mlflow server``) pointed at that store; this module finds the store,
builds the server command and the URLs worth opening, and runs the server in the foreground.

Facts about MLflow 3.17's web UI that the URLs below depend on (checked in headless Chromium):
- ``#/experiments/<id>`` opens the *GenAI* overview unless the URL says
  ``workflowType=machine_learning`` (the workflow type is a global UI setting, default "genai";
  the experiment tag ``mlflow.experimentKind`` does not change it).
- The runs table nests child runs under their collapsed parent when sorted by creation time;
  sorted by a metric it lists every run flat, so the candidates show as a leaderboard.
- The compare page is ``#/compare-runs?runs=<JSON list of run ids>&experiments=<JSON list of
  experiment ids>``. Percent-encoded JSON works too, and is required inside a markdown link: a raw
  ``"`` ends the link's href.
- Which columns the runs table shows (``selectedColumns``, ``columnOrder``: ids like
  ``metrics.`accuracy```) is per-browser UI state (local storage), with no URL parameter and no
  experiment-level default. The one way to hand a layout to every browser is a *shared view*: the
  experiment tag ``mlflow.sharedViewState.<key>`` holding the state as JSON, opened by the URL
  parameter ``viewStateShareKey=<key>`` (what the UI's own "share" writes; the page then says
  "You're viewing a shared view" and offers to save it as the user's own). The URL must carry no
  sort or filter parameter then, or the shared state is ignored; the sort goes into the state.
  Without the shared view, the metric columns come after Created, Dataset, Duration, Source and
  Models, off screen to the right on a laptop.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Optional

from frugalnas.errors import ConfigError
from frugalnas.track.location import EMBEDDED_DB as DB_NAME
from frugalnas.track.location import EMBEDDED_FOLDER as STORE_DIR
from frugalnas.track.location import embedded_paths


@dataclass(frozen=True)
class EmbeddedStore:
    """The MLflow store inside one experiment's output folder (all paths absolute)."""

    out: Path
    db: Path
    artifacts: Path

    @property
    def backend_uri(self) -> str:
        # sqlite:/// + an absolute path gives the four slashes SQLAlchemy wants for /abs/paths.
        return f"sqlite:///{self.db}"


def store_paths(out: str | Path) -> EmbeddedStore:
    """Where the embedded store of output folder OUT lives (whether or not it exists yet)."""
    db, artifacts = embedded_paths(out)
    return EmbeddedStore(out=Path(out).expanduser().resolve(), db=db, artifacts=artifacts)


def _read_config(out: Path) -> dict:
    path = out / "config.json"
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ConfigError(f"{path}: not valid JSON ({error})") from None


def find_store(out: str | Path) -> EmbeddedStore:
    """The embedded store of OUT, or a ConfigError that says why there is none and what to do."""
    store = store_paths(out)
    if store.db.is_file():
        return store
    if not store.out.is_dir():
        raise ConfigError(f"output folder {store.out} does not exist: run `frugalnas run CONFIG --out {store.out}` "
                          "first, or pass --out the folder of an experiment that ran")
    uri = (_read_config(store.out).get("tracking") or {}).get("uri")
    if uri:
        raise ConfigError(f"{store.out} was tracked to the MLflow server {uri}, not to an embedded store: "
                          "open that server's UI instead (`frugalnas ui` is only for embedded stores)")
    raise ConfigError(f"no MLflow store in {store.out} (expected {store.db}): run `frugalnas run CONFIG --out "
                      f"{store.out}` first; an experiment writes its store there when tracking.uri is unset "
                      "and MLFLOW_TRACKING_URI is not set")


def newest_store(root: str | Path = "runs") -> EmbeddedStore:
    """The most recently written embedded store among ROOT's subfolders (ROOT/*/mlflow/mlflow.db)."""
    root = Path(root).expanduser().resolve()
    dbs = sorted(root.glob(f"*/{STORE_DIR}/{DB_NAME}"), key=lambda p: p.stat().st_mtime) if root.is_dir() else []
    if not dbs:
        raise ConfigError(f"no output folder under {root} has an MLflow store ({root}/*/{STORE_DIR}/{DB_NAME}): "
                          "run `frugalnas run CONFIG` first, or pass --out the folder of an experiment that ran")
    return store_paths(dbs[-1].parent.parent)


def experiment_name(out: str | Path) -> Optional[str]:
    """The MLflow experiment of output folder OUT: config.json's tracking.experiment, else its name."""
    config = _read_config(Path(out))
    return (config.get("tracking") or {}).get("experiment") or config.get("name") or None


def find_experiment_id(store: EmbeddedStore, name: str) -> Optional[str]:
    """The id of the live experiment called NAME in STORE, or None when there is none."""
    from mlflow.tracking import MlflowClient

    experiment = MlflowClient(tracking_uri=store.backend_uri).get_experiment_by_name(name)
    if experiment is None or experiment.lifecycle_stage != "active":
        return None
    return experiment.experiment_id


def server_command(store: EmbeddedStore, host: str = "127.0.0.1", port: int = 5000, workers: int = 1) -> list[str]:
    """The `mlflow server` command line serving STORE (UI, REST API and artifacts).

    One worker: the store is one SQLite file on one machine, and MLflow's default of 4 uvicorn
    workers only costs memory here. MLflow's security middleware already accepts localhost and
    private-network Host headers; for other names pass --allowed-hosts yourself.
    """
    return [sys.executable, "-m", "mlflow", "server",
            "--backend-store-uri", store.backend_uri,
            "--artifacts-destination", str(store.artifacts),
            "--host", host, "--port", str(port), "--workers", str(workers)]


def base_url(host: str, port: int) -> str:
    """The address a browser on this machine uses (0.0.0.0 / :: listen everywhere, so use loopback)."""
    shown = {"0.0.0.0": "127.0.0.1", "::": "[::1]"}.get(host, f"[{host}]" if ":" in host else host)
    return f"http://{shown}:{port}"


#: The shared view (see the module docstring) that puts the candidates' score and cost first.
LEADERBOARD_VIEW = "frugalnas-leaderboard"
VIEW_TAG_PREFIX = "mlflow.sharedViewState."
LEADERBOARD_METRICS = ("accuracy", "images_processed", "params", "flops", "seconds")


def leaderboard_view_state(order_by: str = "accuracy", metrics: Iterable[str] = LEADERBOARD_METRICS) -> dict:
    """The runs-table state of the leaderboard view: sorted by ORDER_BY (best first, which also lists
    the nested candidates flat) with the METRICS columns right after the run name, in that order."""
    columns = [f"metrics.`{name}`" for name in metrics]
    return {"orderByKey": f"metrics.`{order_by}`", "orderByAsc": False, "selectedColumns": columns,
            "columnOrder": columns}


def share_leaderboard_view(client, experiment_id: str, **state) -> str:
    """Store the leaderboard view on the experiment (tag ``mlflow.sharedViewState.<key>``); returns the key."""
    client.set_experiment_tag(experiment_id, VIEW_TAG_PREFIX + LEADERBOARD_VIEW,
                              json.dumps(leaderboard_view_state(**state)))
    return LEADERBOARD_VIEW


def experiment_url(base: str, experiment_id: str, order_by: Optional[str] = "accuracy",
                   view: Optional[str] = None) -> str:
    """The experiment's runs table in the classic-ML view: the shared VIEW when given (its columns
    and sort), else sorted by metric ORDER_BY (best first).

    Sorting by a metric also lists the nested candidate runs flat instead of under their collapsed
    parent; a metric no run has still lists every run.
    """
    query = {"workflowType": "machine_learning"}
    if view:
        query["viewStateShareKey"] = view  # a sort parameter beside it would make the UI ignore the view
    elif order_by:
        query.update(orderByKey=f"metrics.`{order_by}`", orderByAsc="false")
    return f"{base}/#/experiments/{experiment_id}/runs?{urllib.parse.urlencode(query, quote_via=urllib.parse.quote)}"


def leaderboard_fragment(experiment_id: str) -> str:
    """The URL fragment of the experiment's leaderboard view (markdown-link safe, like the compare link)."""
    return experiment_url("", experiment_id, view=LEADERBOARD_VIEW).lstrip("/")


def shared_view(store: "EmbeddedStore", experiment_id: str) -> Optional[str]:
    """LEADERBOARD_VIEW if the experiment carries it (experiments tracked by this frugalnas do)."""
    from mlflow.tracking import MlflowClient

    tags = MlflowClient(tracking_uri=store.backend_uri).get_experiment(experiment_id).tags
    return LEADERBOARD_VIEW if VIEW_TAG_PREFIX + LEADERBOARD_VIEW in tags else None


def compare_runs_fragment(run_ids: Iterable[str], experiment_ids: Iterable[str]) -> str:
    """The URL fragment of the page comparing RUN_IDS side by side (params, metrics, tags, plots).

    Percent-encoded, so it can go into a markdown link: e.g. an experiment description
    (experiment tag ``mlflow.note.content``) with ``[compare the candidates](<fragment>)`` shows on
    the experiment page as a link that opens the comparison in one click.
    """
    def encoded(ids: Iterable[str]) -> str:
        return urllib.parse.quote(json.dumps([str(i) for i in ids], separators=(",", ":")), safe="")

    return f"#/compare-runs?runs={encoded(run_ids)}&experiments={encoded(experiment_ids)}"


def _check_port_free(host: str, port: int) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as error:
            raise ConfigError(f"cannot listen on {host}:{port} ({error.strerror}): "
                              "another server is using it; pick another port with --port") from None


def wait_healthy(url: str, process: subprocess.Popen, timeout: float = 90.0) -> bool:
    """Poll URL/health until it answers OK (True), the process exits or TIMEOUT passes (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    return True
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.5)
    return False


def serve(store: EmbeddedStore, host: str = "127.0.0.1", port: int = 5000,
          echo: Callable[[str], None] = print) -> int:
    """Run the MLflow UI on STORE in the foreground until Ctrl+C (or SIGTERM); returns the exit code.

    The server runs in its own process group (`mlflow server` starts uvicorn as a child process),
    and the whole group is stopped on the way out, so no server outlives the command.
    """
    _check_port_free(host, port)
    base = base_url(host, port)
    name = experiment_name(store.out)
    experiment_id = find_experiment_id(store, name) if name else None
    echo(f"MLflow UI for {store.out}: {base}")
    if experiment_id is not None:
        echo(f"experiment {name!r}: {experiment_url(base, experiment_id, view=shared_view(store, experiment_id))}")
    elif name:
        echo(f"no experiment named {name!r} in {store.db} yet; all experiments: {base}/#/experiments")
    process = subprocess.Popen(server_command(store, host, port), start_new_session=True)

    def stop(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        if wait_healthy(base, process):
            echo("ready (Ctrl+C stops the server)")
        return process.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        signal.signal(signal.SIGTERM, previous)
        stop_process_group(process)


def stop_process_group(process: subprocess.Popen, grace: float = 10.0) -> None:
    """Stop PROCESS and every process in its group (it must lead one: start_new_session=True).

    SIGTERM first; whatever is still there after GRACE seconds gets SIGKILL.
    """
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            break
        if _group_gone(process, grace):
            break
    process.wait()


def _group_gone(process: subprocess.Popen, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        process.poll()  # reap the leader: its zombie would keep the group alive
        try:
            os.killpg(process.pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.2)
    return False
