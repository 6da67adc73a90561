"""Test helpers for a real MLflow server and a real browser (headless Chromium).

The MLflow UI is a React single-page app: its HTML is an empty shell, so checking what a user
sees means running its JavaScript. Chromium's `--dump-dom` with `--virtual-time-budget` does that
in one command: virtual time only advances while the page has no network request pending, so the
budget is spent after the app's API calls have answered and the DOM is printed as rendered.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Iterator, Sequence

from frugalnas.track.ui import stop_process_group, wait_healthy

CHROMIUM = Path("/usr/bin/chromium")
# how long `mlflow server` may take to answer /health: on 2 cores busy with other work it once took 76 s
# to finish starting up, and 90 s ran out just after
SERVER_START_TIMEOUT = 180.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_health(url: str, process: subprocess.Popen, log: Path, timeout: float = SERVER_START_TIMEOUT) -> None:
    """Wait until URL/health answers; raise with the tail of LOG when PROCESS exits or TIMEOUT passes."""
    if not wait_healthy(url, process, timeout=timeout):
        state = f"exited with code {process.returncode}" if process.poll() is not None else f"not up after {timeout:.0f} s"
        tail = log.read_text(errors="replace")[-4000:] if log.exists() else "(no output)"
        raise RuntimeError(f"MLflow server at {url} {state}; last output:\n{tail}")


@contextlib.contextmanager
def mlflow_server(backend_db: Path, artifacts: Path) -> Iterator[str]:
    """A real `mlflow server` on 127.0.0.1 serving BACKEND_DB (SQLite) and ARTIFACTS; yields its URL.

    The server (and the uvicorn process it starts) runs in its own process group, stopped on exit.
    """
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = Path(tempfile.mkdtemp(prefix="mlflow-server-")) / "server.log"
    command = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{Path(backend_db).resolve()}",
               "--artifacts-destination", str(Path(artifacts).resolve()), "--host", "127.0.0.1", "--port", str(port),
               "--workers", "1"]
    with open(log, "wb") as sink:
        process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for_health(url, process, log)
        yield url
    finally:
        stop_process_group(process)
        shutil.rmtree(log.parent, ignore_errors=True)


def ensure_chromium() -> Path:
    """Path of Chromium, installing Debian's `chromium` package when it is missing.

    Never skips: a test that needs a browser and has none fails with apt's own output.
    """
    if CHROMIUM.exists():
        return CHROMIUM
    if os.geteuid() != 0:
        raise RuntimeError(f"{CHROMIUM} is missing and installing it needs root: "
                           "run `apt-get install -y --no-install-recommends chromium` as root")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    steps = (["apt-get", "update"], ["apt-get", "install", "-y", "--no-install-recommends", "chromium"])
    for step in steps:
        done = subprocess.run(step, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"`{' '.join(step)}` failed (exit {done.returncode}) while installing Chromium:\n"
                               f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    if not CHROMIUM.exists():
        raise RuntimeError(f"apt-get installed chromium but {CHROMIUM} does not exist")
    return CHROMIUM


def render_dom(url: str, *, wait_ms: int = 15000, expect: Sequence[str] = (), attempts: int = 3) -> str:
    """The DOM of URL after headless Chromium ran its JavaScript for WAIT_MS of virtual time.

    With EXPECT, a page missing any of those strings is rendered again with twice the budget, up to
    ATTEMPTS times (a slow first load on a busy machine); the last DOM is returned either way, for
    the caller's assertions to report.
    """
    chromium = ensure_chromium()
    dom = ""
    for attempt in range(attempts if expect else 1):
        budget = wait_ms * 2 ** attempt
        with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
            command = [str(chromium), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                       "--disable-background-networking", "--disable-component-update", "--disable-sync",
                       f"--user-data-dir={profile}", f"--virtual-time-budget={budget}", "--dump-dom", url]
            done = subprocess.run(command, capture_output=True, text=True, timeout=budget / 1000 + 120)
        if done.returncode != 0:
            raise RuntimeError(f"chromium exited with code {done.returncode} rendering {url}:\n{done.stderr[-3000:]}")
        dom = done.stdout
        if all(text in dom for text in expect):
            break
    return dom
