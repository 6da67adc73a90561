"""Test helpers: real Ray clusters of one or more nodes on this machine, each node a separate
``ray start --block`` (its own raylet, object store and workers), as on a real cluster.

Every node runs in a process group of its own, with its own temp dir and ports, so a cluster
coexists with the test session's Ray and with other Ray clusters on the machine. A node is lost
without grace by SIGKILL to its process group (:meth:`RayCluster.kill_node`: its raylet, agents
and the workers running candidates die at once, as when a machine goes away). On exit every node
is stopped the same way (``ray stop`` would stop every Ray on the machine) and the cluster checks
that none of its processes is left. Nothing is read from or written to ``~/.ray``: a token, when
token authentication is on, lives in the cluster's temp dir (``RAY_AUTH_TOKEN_PATH``).
"""
from __future__ import annotations

import json
import os
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import psutil

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent  # the venv's bin: ray, frugalnas
RAY = str(BIN / "ray")
DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: never via a proxy


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


def descendants(pid: int) -> dict[int, float]:
    """pid -> start time of every process below pid."""
    try:
        return {p.pid: p.create_time() for p in psutil.Process(pid).children(recursive=True)}
    except psutil.Error:
        return {}


def processes_under(root: Path, known: dict[int, float] | None = None) -> list[psutil.Process]:
    """Live processes that belong to Ray sessions under ``root``: their command line names root,
    their environment holds a RAY_TMPDIR in it, or they are in ``known`` (pid -> start time).
    Ray's processes rename themselves (``ray::IDLE``), which can also overwrite what /proc shows
    of their environment, and its workers run in sessions of their own."""
    known = known or {}
    found = []
    for proc in psutil.process_iter(["cmdline", "status", "create_time"]):
        try:
            if proc.pid == os.getpid() or proc.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            if (known.get(proc.pid) == proc.info["create_time"]
                    or str(root) in " ".join(proc.info["cmdline"] or [])
                    or proc.environ().get("RAY_TMPDIR", "").startswith(str(root))):
                found.append(proc)
        except psutil.Error:
            continue
    return found


def reap(find, what: str, timeout: float = 30) -> None:
    """Wait up to ``timeout`` s for the processes ``find()`` returns to exit (Ray's workers exit on
    their own once their raylet is gone), kill any left by pid, and fail if there were any."""
    deadline = time.monotonic() + timeout
    while (left := find()) and time.monotonic() < deadline:
        time.sleep(1)
    for straggler in left:
        try:
            straggler.kill()
        except psutil.Error:
            pass
    assert not left, f"processes of {what} outlived it: " + "; ".join(
        f"{p.pid} {' '.join(p.info['cmdline'] or [])[:120]}" for p in left)


@contextmanager
def own_ray_dir() -> Iterator[Path]:
    """A temp dir for the local Ray of a driver the test starts (``RAY_TMPDIR``; short, for Ray's unix
    sockets); on exit, fails if any process of it is left (after killing it by pid)."""
    root = Path(tempfile.mkdtemp(prefix="frd-", dir="/tmp"))
    try:
        yield root
        reap(lambda: processes_under(root), f"the Ray started under {root}")
    finally:
        shutil.rmtree(root, ignore_errors=True)


def kill_process_group(proc: subprocess.Popen) -> None:
    """SIGKILL to ``proc``'s whole process group (it must have been started with start_new_session):
    nothing in it gets to run a handler."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=60)


class NodeExited(RuntimeError):
    """A node's ``ray start`` exited while the cluster waited for it."""


@dataclass
class RayNode:
    """One ``ray start --block`` process (and its process group)."""

    name: str
    proc: subprocess.Popen
    temp_dir: Path
    num_cpus: int
    known: dict[int, float] = field(default_factory=dict)  # pid -> start time of processes seen below it
    lost: bool = False  # killed, or exited by itself

    def remember(self) -> None:
        self.known.update(descendants(self.proc.pid))


@dataclass
class RayCluster:
    root: Path  # everything of the cluster lives under it
    env: dict  # environment of its processes, and for clients of it (drivers, the ray CLI)
    gcs_port: int
    dashboard_port: int | None
    token: str | None
    nodes: list[RayNode] = field(default_factory=list)

    @property
    def gcs_address(self) -> str:
        return f"127.0.0.1:{self.gcs_port}"

    @property
    def address(self) -> str:
        """The dashboard (job submission) address."""
        return f"http://127.0.0.1:{self.dashboard_port}"

    @property
    def head(self) -> RayNode:
        return self.nodes[0]

    @property
    def temp_dir(self) -> Path:
        return self.head.temp_dir

    def driver_env(self, **extra: str) -> dict:
        """Environment for a driver joining this cluster (``frugalnas run``)."""
        return {**self.env, "RAY_ADDRESS": self.gcs_address, **extra}

    def cli(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run([RAY, *args], env=self.env, cwd=REPO, capture_output=True, text=True, timeout=timeout)

    def get(self, path: str, token: str | None = "own") -> tuple[int, dict | None]:
        """GET on the dashboard's REST API (status 0: not reachable); sends the bearer token unless None."""
        request = urllib.request.Request(self.address + path)
        if token is not None and (self.token or token != "own"):
            request.add_header("Authorization", f"Bearer {self.token if token == 'own' else token}")
        try:
            with DIRECT.open(request, timeout=10) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, None
        except OSError:  # refused or reset while the dashboard starts
            return 0, None

    def _start(self, name: str, arguments: list[str], num_cpus: int) -> RayNode:
        temp_dir = self.root / name
        min_worker, max_worker = free_port_range()
        command = [RAY, "start", "--block", "--disable-usage-stats", "--node-ip-address=127.0.0.1",
                   f"--num-cpus={num_cpus}", f"--temp-dir={temp_dir}", f"--node-manager-port={free_port()}",
                   f"--object-manager-port={free_port()}", f"--min-worker-port={min_worker}",
                   f"--max-worker-port={max_worker}", f"--metrics-export-port={free_port()}",
                   f"--dashboard-agent-listen-port={free_port()}", f"--dashboard-agent-grpc-port={free_port()}",
                   f"--runtime-env-agent-port={free_port()}", "--object-store-memory=100000000", *arguments]
        with open(self.root / f"{name}.log", "w") as log:
            proc = subprocess.Popen(command, env=self.env, cwd=self.root, stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        node = RayNode(name, proc, temp_dir, num_cpus)
        self.nodes.append(node)
        return node

    def add_worker(self, num_cpus: int, timeout: float = 240, attempts: int = 2) -> RayNode:
        """A worker node joining the head; returns once the cluster has its CPUs. On a busy machine a
        raylet can miss Ray's fixed 30 s registration window and exit: it is started again then."""
        expected = sum(n.num_cpus for n in self.nodes if not n.lost) + num_cpus  # a lost node's CPUs go
        for attempt in range(attempts):
            node = self._start(f"worker{len(self.nodes)}", [f"--address={self.gcs_address}"], num_cpus)
            try:
                self.wait_for_cpus(expected, timeout)
            except NodeExited:
                if attempt == attempts - 1:
                    raise
                continue
            node.remember()
            return node
        raise AssertionError("unreachable")

    def total_cpus(self) -> float:
        """CPUs of the nodes alive, as the GCS sees them (0 while it does not answer)."""
        result = self.cli("status", f"--address={self.gcs_address}", timeout=60)
        for line in result.stdout.splitlines():
            line = line.strip()
            if line.endswith(" CPU") and "/" in line:
                return float(line.split("/")[1].split()[0])
        return 0.0

    def wait_for_cpus(self, expected: float, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self.total_cpus() != expected:
            for node in self.nodes:
                if node.proc.poll() is not None and not node.lost:
                    node.lost = True
                    raise NodeExited(f"Ray node {node.name} exited ({node.proc.returncode}):\n"
                                     f"{(self.root / f'{node.name}.log').read_text()[-4000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the cluster did not reach {expected} CPUs in {timeout:.0f} s")
            time.sleep(1)

    def kill_node(self, node: RayNode) -> None:
        """Lose ``node`` without grace: SIGKILL to its whole process group."""
        node.remember()
        node.lost = True
        kill_process_group(node.proc)

    def processes(self) -> list[psutil.Process]:
        """Live processes of this cluster (see :func:`processes_under`)."""
        return processes_under(self.root, {pid: started for node in self.nodes for pid, started in node.known.items()})

    def stop(self) -> None:
        """Stop every node (SIGTERM to the head's ``ray start`` so it drains, then SIGKILL to every
        group), then fail if any process of the cluster survives (after killing it by pid)."""
        for node in self.nodes:
            node.remember()
        for node in reversed(self.nodes[1:]):
            self.kill_node(node)
        head = self.nodes[0].proc if self.nodes else None
        if head is not None and head.poll() is None:
            head.send_signal(signal.SIGTERM)
            try:
                head.wait(timeout=60)
            except subprocess.TimeoutExpired:
                pass
        for node in self.nodes:
            try:
                os.killpg(node.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            node.proc.wait(timeout=30)
        deadline = time.monotonic() + 30
        reap(lambda: self.processes(), f"the Ray cluster in {self.root}")


@contextmanager
def ray_cluster(head_cpus: int = 2, *, dashboard: bool = False, token: bool = False,
                extra_env: dict | None = None) -> Iterator[RayCluster]:
    """A Ray head (``head_cpus`` CPUs) on free ports, in its own process group; add worker nodes with
    :meth:`RayCluster.add_worker`. With ``dashboard`` the jobs API answers at ``cluster.address``;
    with ``token`` token authentication is on (the token in the cluster's temp dir). Stopped and
    checked on exit."""
    root = Path(tempfile.mkdtemp(prefix="frc-", dir="/tmp"))  # short: Ray's unix sockets live under it
    # no RAY_* (the session's RAY_AUTH_MODE, a RAY_ADDRESS) and no MLFLOW_* (runs use their embedded
    # store) leaks from the test session into the cluster and so into its jobs
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "MLFLOW_"))}
    env.update(RAY_USAGE_STATS_ENABLED="0", RAY_TMPDIR=str(root),  # a driver's own files too stay in root
               PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}")  # like a head started from the activated venv
    secret = None
    if token:
        secret = secrets.token_hex(32)
        (root / "auth_token").write_text(secret)
        env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(root / "auth_token"))
    else:
        env.update(RAY_AUTH_MODE="disabled")
    env.update(extra_env or {})
    cluster = RayCluster(root, env, free_port(), free_port() if dashboard else None, secret)
    arguments = ["--head", f"--port={cluster.gcs_port}", f"--ray-client-server-port={free_port()}"]
    if dashboard:
        arguments += ["--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={cluster.dashboard_port}"]
    else:
        arguments += ["--include-dashboard=false"]
    try:
        head = cluster._start("head", arguments, head_cpus)
        deadline = time.monotonic() + 240
        while not (cluster.get("/api/jobs/")[0] == 200 if dashboard else cluster.total_cpus() == head_cpus):
            if head.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the Ray head did not come up (exit {head.proc.poll()}):\n"
                                   f"{(root / 'head.log').read_text()[-4000:]}")
            time.sleep(1)
        head.remember()
        yield cluster
    finally:
        try:
            cluster.stop()
        finally:
            shutil.rmtree(root, ignore_errors=True)


TERMINAL = {"SUCCEEDED", "FAILED", "STOPPED"}


def wait_for_job(cluster: RayCluster, job_id: str, timeout: float) -> dict:
    """Poll the job until it ends; fails with its logs unless it SUCCEEDED."""
    import pytest

    deadline = time.monotonic() + timeout
    info: dict = {}
    while time.monotonic() < deadline:
        status, info = cluster.get(f"/api/jobs/{job_id}")
        assert status == 200, f"GET /api/jobs/{job_id} answered {status}"
        if info["status"] in TERMINAL:
            break
        time.sleep(3)
    if info.get("status") != "SUCCEEDED":
        logs = cluster.cli("job", "logs", job_id, "--address", cluster.address)
        state = info.get("status")
        ended = f"ended {state}" if state in TERMINAL else f"still {state} after {timeout:.0f} s"
        pytest.fail(f"job {job_id} {ended}: {info.get('message')}\n"
                    f"--- ray job logs ---\n{logs.stdout[-8000:]}{logs.stderr[-2000:]}")
    return info
