"""End to end: ``ray job submit`` runs ``frugalnas run jobs/quickstart.yaml`` on a real Ray head.

The head is a separate ``ray start --head --block`` with token authentication on, its own temp dir
and its own ports, so it coexists with the test session's Ray and with other Ray clusters on the
machine. The token lives in the test's temp dir (``RAY_AUTH_TOKEN_PATH``), never in ``~/.ray``.
The head is torn down by signalling its own process group (``ray stop`` would stop every Ray on the
machine), and the test checks that none of its processes is left.
"""
from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent  # the venv's bin: ray, frugalnas
RAY = str(BIN / "ray")
DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: never via a proxy
TERMINAL = {"SUCCEEDED", "FAILED", "STOPPED"}
TINY = ["--set", "search.budget=2", "--set", "search.epochs_per_candidate=1", "--set", "final.epochs=1",
        "--set", "embedding.epochs=1"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def free_port_range(size: int = 200) -> tuple[int, int]:
    """A block of ports for Ray's workers, below the ephemeral range, that nothing listens on now."""
    rng = secrets.SystemRandom()
    for _ in range(50):
        start = rng.randrange(20000, 32000 - size)
        try:
            for port in range(start, start + size):
                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", port))
        except OSError:
            continue
        return start, start + size - 1
    raise RuntimeError("no free block of worker ports between 20000 and 32000")


@dataclass
class Head:
    address: str  # the dashboard (job submission) address
    gcs_port: int
    env: dict  # environment for the ray CLI: token auth on, token from the temp dir
    token: str
    temp_dir: Path  # Ray's --temp-dir

    def cli(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run([RAY, *args], env=self.env, cwd=REPO, capture_output=True, text=True, timeout=timeout)

    def get(self, path: str, token: str | None = "own") -> tuple[int, dict | None]:
        """GET on the dashboard's REST API (status 0: not reachable); sends the bearer token unless None."""
        request = urllib.request.Request(self.address + path)
        if token is not None:
            request.add_header("Authorization", f"Bearer {self.token if token == 'own' else token}")
        try:
            with DIRECT.open(request, timeout=10) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, None
        except OSError:  # refused or reset while the dashboard starts
            return 0, None


def processes_of(root: Path, known: dict[int, float]) -> list[psutil.Process]:
    """Live processes of the head whose files are under root.

    A process counts when its command line names root, its environment holds our
    ``RAY_AUTH_TOKEN_PATH`` (inherited from the head) or it is a recorded descendant of the head
    (pid and start time). Ray's processes rename themselves (``ray::IDLE``), which can also overwrite
    what /proc shows of their environment, and its workers run in sessions of their own."""
    found = []
    for proc in psutil.process_iter(["cmdline", "status", "create_time"]):
        try:
            if proc.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            if (known.get(proc.pid) == proc.info["create_time"]
                    or str(root) in " ".join(proc.info["cmdline"] or [])
                    or proc.environ().get("RAY_AUTH_TOKEN_PATH", "").startswith(str(root))):
                found.append(proc)
        except psutil.Error:
            continue
    return found


def descendants(pid: int) -> dict[int, float]:
    """pid -> start time of every process below pid."""
    try:
        return {p.pid: p.create_time() for p in psutil.Process(pid).children(recursive=True)}
    except psutil.Error:
        return {}


@contextmanager
def ray_head(num_cpus: int = 2):
    """A Ray head with token auth and free ports, in its own process group; stopped and checked on exit."""
    root = Path(tempfile.mkdtemp(prefix="frj-", dir="/tmp"))  # short: Ray's unix sockets live under it
    token = secrets.token_hex(32)
    token_path = root / "auth_token"
    token_path.write_text(token)
    # no RAY_* (the session's RAY_AUTH_MODE=disabled, a RAY_ADDRESS) and no MLFLOW_* (the run must
    # use its embedded store) leaks from the test session into the head and so into the job
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "MLFLOW_"))}
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token_path), RAY_USAGE_STATS_ENABLED="0",
               PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}")  # like a head started from the activated venv
    dashboard_port, gcs_port = free_port(), free_port()
    min_worker, max_worker = free_port_range()
    temp_dir = root / "ray"
    command = [RAY, "start", "--head", "--block", "--disable-usage-stats", "--node-ip-address=127.0.0.1",
               f"--port={gcs_port}", "--include-dashboard=true", "--dashboard-host=127.0.0.1",
               f"--dashboard-port={dashboard_port}", f"--num-cpus={num_cpus}", f"--temp-dir={temp_dir}",
               f"--ray-client-server-port={free_port()}", f"--dashboard-agent-listen-port={free_port()}",
               f"--dashboard-agent-grpc-port={free_port()}", f"--runtime-env-agent-port={free_port()}",
               f"--metrics-export-port={free_port()}", f"--node-manager-port={free_port()}",
               f"--object-manager-port={free_port()}", f"--min-worker-port={min_worker}",
               f"--max-worker-port={max_worker}"]
    log_path = root / "head.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(command, env=env, cwd=root, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    head = Head(f"http://127.0.0.1:{dashboard_port}", gcs_port, env, token, temp_dir)
    try:
        deadline = time.monotonic() + 180
        while head.get("/api/jobs/")[0] != 200:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the Ray head did not come up (exit {proc.poll()}):\n"
                                   f"{log_path.read_text()[-4000:]}")
            time.sleep(1)
        yield head
    finally:
        try:
            stop_head(proc, root, descendants(proc.pid))
        finally:
            shutil.rmtree(root, ignore_errors=True)


def stop_head(proc: subprocess.Popen, root: Path, known: dict[int, float]) -> None:
    """SIGTERM to `ray start --block` (it drains and stops its children), then SIGKILL to its group.

    Signalling the whole group at once makes the head wait 30 s for a GCS that is already gone, so
    the group only gets the SIGKILL, for stragglers. Fails if any process of this head survives."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=30)
    deadline = time.monotonic() + 30
    while (left := processes_of(root, known)) and time.monotonic() < deadline:
        time.sleep(1)
    for straggler in left:
        try:
            straggler.kill()
        except psutil.Error:
            pass
    assert not left, f"processes of the Ray head in {root} outlived it: " + "; ".join(
        f"{p.pid} {' '.join(p.info['cmdline'] or [])[:120]}" for p in left)


def wait_for_job(head: Head, job_id: str, timeout: float) -> dict:
    """Poll the job until it ends; fails with its logs unless it SUCCEEDED."""
    deadline = time.monotonic() + timeout
    info: dict = {}
    while time.monotonic() < deadline:
        status, info = head.get(f"/api/jobs/{job_id}")
        assert status == 200, f"GET /api/jobs/{job_id} answered {status}"
        if info["status"] in TERMINAL:
            break
        time.sleep(3)
    if info.get("status") != "SUCCEEDED":
        logs = head.cli("job", "logs", job_id, "--address", head.address)
        state = info.get("status")
        ended = f"ended {state}" if state in TERMINAL else f"still {state} after {timeout:.0f} s"
        pytest.fail(f"job {job_id} {ended}: {info.get('message')}\n"
                    f"--- ray job logs ---\n{logs.stdout[-8000:]}{logs.stderr[-2000:]}")
    return info


def uploaded_working_dir(head: Head) -> Path:
    """The unpacked --working-dir package on the head (Ray keeps it in its temp dir)."""
    packages = [p for p in head.temp_dir.glob("session_latest/runtime_resources/working_dir_files/_ray_pkg_*")
                if p.is_dir()]
    assert len(packages) == 1, f"expected one unpacked working_dir package, found {packages}"
    return packages[0]


def check_mlflow_runs(out: Path, candidates: int) -> None:
    """The embedded MLflow store in OUT/mlflow: a finished experiment run and one child per candidate."""
    import mlflow

    db = out / "mlflow" / "mlflow.db"
    assert db.is_file(), f"no embedded MLflow store at {db} (tracking contract: OUT/mlflow/mlflow.db)"
    client = mlflow.MlflowClient(f"sqlite:///{db}")
    experiments = client.search_experiments()
    runs = [run for e in experiments for run in client.search_runs([e.experiment_id])]
    parents = [r for r in runs if r.data.tags.get("frugalnas.role") == "experiment"]
    assert len(parents) == 1, f"expected one run tagged frugalnas.role=experiment, found {len(parents)}"
    parent = parents[0]
    assert parent.info.status == "FINISHED", parent.info.status
    children = [r for r in runs if r.data.tags.get("frugalnas.role") == "candidate"]
    assert len(children) == candidates, f"expected {candidates} candidate runs, found {len(children)}"
    assert all(r.data.tags.get("mlflow.parentRunId") == parent.info.run_id for r in children)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_ray_job_submit_runs_quickstart_with_token_auth(tmp_path):
    out = tmp_path / "out"
    job_id = f"frugalnas-test-{secrets.token_hex(4)}"
    with ray_head() as head:
        # token auth is really on: the REST API refuses requests without the token or with another one
        assert head.get("/api/jobs/", token=None)[0] == 401
        assert head.get("/api/jobs/", token=secrets.token_hex(32))[0] in (401, 403)

        submitted = head.cli("job", "submit", "--address", head.address, "--working-dir", str(REPO),
                             "--submission-id", job_id, "--no-wait", "--",
                             "frugalnas", "run", "jobs/quickstart.yaml", "--out", str(out), *TINY)
        assert submitted.returncode == 0, submitted.stdout + submitted.stderr
        wait_for_job(head, job_id, timeout=720)
        # ensure_ray() joined this head through the RAY_ADDRESS Ray sets for the job (no Ray of its own)
        logs = head.cli("job", "logs", job_id, "--address", head.address).stdout
        assert re.search(rf"connected to the Ray cluster at \S+:{head.gcs_port}\b", logs), logs[-4000:]

        # the upload: configs and code, not the venv, git history, caches or earlier outputs
        package = uploaded_working_dir(head)
        assert (package / "jobs" / "quickstart.yaml").is_file()
        uploaded = {p.relative_to(package).parts[0] for p in package.iterdir()}
        assert not uploaded & {".venv", ".git", "runs", ".pytest_cache", ".ruff_cache"}, uploaded
        assert not list(package.rglob("__pycache__"))
        size = sum(p.stat().st_size for p in package.rglob("*") if p.is_file())
        assert size < 20 << 20, f"the working_dir upload is {size >> 20} MiB"

    summary = json.loads((out / "summary.json").read_text())
    assert summary["experiment"] == "quickstart" and summary["strategy"] == "evolution"
    assert len(summary["trials"]) == 2
    assert summary["best_arch"] in {t["arch"] for t in summary["trials"]}
    assert 0 <= summary["final_test_accuracy"] <= 1
    assert summary["output_dir"] == str(out)
    assert (out / "final_model.pt").is_file()
    check_mlflow_runs(out, candidates=2)
