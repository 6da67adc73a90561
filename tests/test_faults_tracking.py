"""The tracking store on a full or read-only disk, for real: `frugalnas run` runs in a mount namespace
of its own where OUT/mlflow (the embedded store) is a small tmpfs. Unusable from the start, the run
fails before any work; made full and read-only mid-search, the search goes on and summary.json says
what was not logged. Skipped where this machine cannot create mount namespaces."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from ray_cluster_support import own_ray_dir

CONFIG = {
    "name": "store",
    "seed": 0,
    "dataset": {"source": "digits", "codec": "png", "val_fraction": 0.15},
    "selection": {"policy": "random", "subset_size": 60},
    "space": {"name": "nb201", "network": {"channels": 4, "cells_per_stage": 1, "stages": 2}},
    "search": {"strategy": "random", "budget": 4, "scheduler": "fifo", "epochs_per_candidate": 2},
    "final": {"epochs": 1},
    "resources": {"cpus_per_trial": 1, "max_concurrent_trials": 1},
}


def namespace_command() -> list[str] | None:
    """How to enter a mount namespace of one's own here (root: plain; otherwise as root of a user
    namespace), or None if neither works."""
    if not shutil.which("unshare") or not shutil.which("nsenter"):
        return None
    for command in (["unshare", "--mount", "--propagation", "private"],
                    ["unshare", "--user", "--map-root-user", "--mount", "--propagation", "private"]):
        probe = tempfile.mkdtemp()
        try:
            done = subprocess.run(command + ["sh", "-c", f"mount -t tmpfs -o size=64k tmpfs {probe} && umount {probe}"],
                                  capture_output=True, timeout=30)
        except (OSError, subprocess.SubprocessError):
            continue
        finally:
            os.rmdir(probe)
        if done.returncode == 0:
            return command
    return None


UNSHARE = namespace_command()
pytestmark = pytest.mark.skipif(UNSHARE is None, reason="cannot create a mount namespace with a tmpfs here")


def run_on_small_store(tmp_path, setup: str, size: str = "32m", **popen) -> tuple[subprocess.Popen, Path]:
    """`frugalnas run` with OUT/mlflow a tmpfs of ``size`` in its own mount namespace; ``setup`` is a
    shell step run there after mounting (e.g. make it read-only), before the run."""
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(CONFIG))
    out = tmp_path / "out"
    store = out / "mlflow"
    store.mkdir(parents=True)
    script = f'mount -t tmpfs -o size={size} tmpfs "{store}" && {setup or "true"} && exec "$@"'
    command = [*UNSHARE, "sh", "-c", script, "sh", sys.executable, "-m", "frugalnas.cli", "run", str(path),
               "--out", str(out), "--json"]
    return subprocess.Popen(command, text=True, start_new_session=True, **popen), out


@pytest.mark.parametrize("setup, what", [
    ("mount -o remount,ro {store}", "read-only"),
    ("(cat /dev/zero > {store}/filler 2>/dev/null; true)", "full"),
])
def test_an_unusable_store_fails_before_any_work(tmp_path, setup, what):
    store = tmp_path / "out" / "mlflow"
    run, out = run_on_small_store(tmp_path, setup.format(store=store), size="256k", stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE)
    stdout, stderr = run.communicate(timeout=300)
    assert run.returncode == 2, stderr[-3000:]
    message = "cannot be written (a read-only disk" if what == "read-only" else "bytes free: its disk is full"
    assert f"the MLflow store's folder {store}" in stderr and message in stderr, stderr[-3000:]
    assert "tracking.enabled: false" in stderr
    assert not (out / "dataset").exists()  # nothing ingested, let alone trained


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_store_that_fills_up_then_turns_read_only_mid_search_is_reported_and_the_search_goes_on(tmp_path):
    with own_ray_dir() as ray_dir:
        env = {**{k: v for k, v in os.environ.items() if not k.startswith(("RAY_ADDRESS", "MLFLOW_"))},
               "RAY_TMPDIR": str(ray_dir), "RAY_USAGE_STATS_ENABLED": "0", "PYTHONUNBUFFERED": "1"}
        run, out = run_on_small_store(tmp_path, "", stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        store, lines = out / "mlflow", []
        enter = ["nsenter", "--target", str(run.pid), "--mount", *(["--user"] if "--user" in UNSHARE else []), "--"]
        deadline = time.monotonic() + 600
        for line in run.stderr:
            lines.append(line)
            if "(1 finished)" in line:  # candidate 1 is done: the disk fills up
                filled = subprocess.run(enter + ["sh", "-c", f'cat /dev/zero > "{store}/filler"'], capture_output=True,
                                        text=True, timeout=60)
                assert "No space left on device" in filled.stderr, filled.stderr
            if "(2 finished)" in line:  # and then turns read-only: a read-only bind of it, made aside and
                # moved over it, since a remount (or making a bind over the store read-only in place) is
                # refused with "busy" while the running search has a file open for writing there
                aside = tmp_path / "read-only-store"
                aside.mkdir()
                subprocess.run(enter + ["sh", "-c", f'mount --bind "{store}" "{aside}" && '
                                        f'mount -o remount,bind,ro "{aside}" && mount --move "{aside}" "{store}"'],
                               check=True, timeout=60)
            if "(4 finished)" in line or time.monotonic() > deadline:
                break
        stdout, rest = run.communicate(timeout=600)
        log = "".join(lines) + rest
        assert run.returncode == 0, log[-4000:]
    summary = json.loads(stdout.strip().splitlines()[-1])
    assert len(summary["trials"]) == 4 and all(t["status"] == "finished" for t in summary["trials"])
    assert (out / "final_model.pt").is_file()

    not_logged = summary["tracking"]["not_logged"]
    errors = " ".join(entry["error"] for entry in not_logged).lower()
    assert "full" in errors and ("readonly" in errors or "read-only" in errors), not_logged
    whats = [entry["what"] for entry in not_logged]
    assert "the final model" in whats and "the experiment run's end" in whats, whats
    assert any(w.startswith("candidate 4:") for w in whats), whats
    assert json.loads((out / "summary.json").read_text())["tracking"]["not_logged"] == not_logged
    assert "tracking: MLflow did not record" in log and "the search goes on" in log
    assert summary["tracking"]["registered_model_version"] is None
