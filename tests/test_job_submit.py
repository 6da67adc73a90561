"""End to end: ``ray job submit`` runs ``frugalnas run jobs/quickstart.yaml`` on a real Ray head.

The head is a separate ``ray start --head --block`` with token authentication on, its own temp dir
and its own ports, so it coexists with the test session's Ray and with other Ray clusters on the
machine. The token lives in the test's temp dir (``RAY_AUTH_TOKEN_PATH``), never in ``~/.ray``.
The head is torn down by signalling its own process group (``ray stop`` would stop every Ray on the
machine), and the test checks that none of its processes is left.
"""
from __future__ import annotations

import json
import re
import secrets
from pathlib import Path

import pytest

from ray_cluster_support import REPO, RayCluster, ray_cluster, wait_for_job

TINY = ["--set", "search.budget=2", "--set", "search.epochs_per_candidate=1", "--set", "final.epochs=1",
        "--set", "embedding.epochs=1"]


def uploaded_working_dir(head: RayCluster) -> Path:
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
    with ray_cluster(head_cpus=2, dashboard=True, token=True) as head:
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
