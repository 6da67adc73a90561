"""The fault table: every kind of fault injected for real into a small search, each beside a run of
the same search without the fault, in the same invocation.

    nice -n 10 .venv/bin/python benchmarks/faults.py          # ~30 min on the loaded 2 cores
    .venv/bin/python benchmarks/faults.py --quick             # fewer candidates, ~15 min

Faults (the injection is the one the tests use: tests/fault_injection.py, tests/ray_cluster_support.py):

* in this process (one local Ray): a candidate whose training raises at every attempt, one whose loss
  becomes NaN, one whose worker process is SIGKILLed once (the out-of-memory killer); and the same
  search with Tune's default period for saving the search's state (10 s or more) instead of the
  platform's second, which is what that setting costs;
* `frugalnas run` in a process group of its own: the whole group SIGKILLed mid-search, then
  `--resume` (a Tune search, and a DARTS search); the tracking store (OUT/mlflow on a tmpfs in a
  mount namespace of its own) filled up mid-search, where the machine allows mount namespaces;
* a Ray cluster of a head that runs no candidates and two worker nodes of 1 CPU (Ray's default health
  checks): a worker node SIGKILLed while a candidate runs on it.

For each: whether the search completed, candidates accounted for (finished or recorded as failed) out
of the budget, candidates lost (budgeted but missing: must be 0), duplicate evaluations (an
architecture trained by more than one trial, or holding more than one MLflow run: must be 0), retries,
and the time lost: the faulted search's wall time minus the baseline's (for a killed driver, the
killed run until the kill plus the resumed run, against one uninterrupted run: process start-up
counted on both sides). A failed candidate trains fewer epochs than a finished one, so its fault can
cost less than nothing.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))
from common import machine, write_results  # noqa: E402

import fault_injection  # noqa: E402  (registers the test-only faulty-nb201 space family)
from ray_cluster_support import (descendants, kill_process_group, own_ray_dir, ray_cluster,  # noqa: E402
                                 processes_under)

NETWORK = {"channels": 4, "cells_per_stage": 1, "stages": 2}


def log(*parts) -> None:
    print(time.strftime("%H:%M:%S"), *parts, file=sys.stderr, flush=True)


def tune_config(budget: int, epochs: int, concurrent: int | None = 1, space=None) -> dict:
    return {
        "name": "faults", "seed": 0,
        "dataset": {"source": "digits", "codec": "png", "val_fraction": 0.15},
        "selection": {"policy": "random", "subset_size": 60 if space else 300},  # faulty: one step per epoch
        "space": space or {"name": "nb201", "network": NETWORK},
        "search": {"strategy": "random", "budget": budget, "scheduler": "fifo", "epochs_per_candidate": epochs},
        "final": {"epochs": 1},
        "resources": {"cpus_per_trial": 1, **({"max_concurrent_trials": concurrent} if concurrent else {})},
    }


DARTS = {
    "name": "faults-darts", "seed": 0,
    "dataset": {"source": "digits", "codec": "png", "val_fraction": 0.15},
    "embedding": {"kind": "triplet", "latent_dim": 4, "epochs": 1, "image_size": 8},
    "selection": {"policy": "dds", "subset_size": 50, "warmup_epochs": 1, "mastery": 0.2, "index": "exact"},
    "space": {"name": "nb201", "network": NETWORK, "supernet": NETWORK},
    "search": {"strategy": "darts", "epochs_per_candidate": 6},
    "final": {"epochs": 1, "batch_size": 25},
    "resources": {"workers": 1},
}


# ---------------------------------------------------------------- what a run left behind


def reports(out: Path) -> list[dict]:
    """Every result Tune logged: trial folder, candidate, arch, pid, epoch."""
    rows = []
    for params in glob.glob(str(out / "tune" / "search" / "*" / "params.json")):
        config = json.loads(Path(params).read_text())
        result = Path(params).with_name("result.json")
        for line in (result.read_text().splitlines() if result.exists() else []):
            try:
                report = json.loads(line)
            except ValueError:
                continue
            rows.append({"trial": Path(params).parent.name, "candidate": config["suggestion"], "arch": config["arch"],
                         "pid": report.get("pid"), "epoch": report["epoch"]})
    return rows


def accounting(summary: dict | None, out: Path, budget: int) -> dict:
    """Candidates accounted for and lost, duplicate evaluations, retries, retrained epochs."""
    if summary is None:
        return {"completed": False}
    trials = summary.get("trials") or []
    row = {"completed": True, "accounted": len(trials), "lost": budget - len({t["arch"] for t in trials}),
           "failed": len(summary.get("failed_candidates") or []), "retries": summary.get("candidate_retries", 0)}
    by_arch: dict[str, set] = {}
    epochs: dict[str, list] = {}
    for report in reports(out):
        by_arch.setdefault(report["arch"], set()).add(report["trial"])
        epochs.setdefault(report["arch"], []).append(report["epoch"])
    row["duplicate_trials"] = sum(len(t) - 1 for t in by_arch.values())
    row["epochs_reported_twice"] = sum(len(e) - len(set(e)) for e in epochs.values())  # resumed from older state
    tracking = summary.get("tracking") or {}
    row["not_logged"] = len(tracking.get("not_logged") or [])
    if tracking.get("uri") and (out / "mlflow" / "mlflow.db").exists():
        import mlflow

        client = mlflow.MlflowClient(tracking["uri"])
        runs = client.search_runs([tracking["experiment_id"]],
                                  filter_string=f"tags.mlflow.parentRunId = '{tracking['run_id']}'")
        archs = [r.data.tags.get("frugalnas.arch") for r in runs]
        row["duplicate_runs"] = len(archs) - len(set(archs))
        row["runs_left_running"] = sum(r.info.status == "RUNNING" for r in runs)
    row["search_seconds"] = summary.get("search_wall_seconds")
    return row


# ---------------------------------------------------------------- in this process


def in_process(work: Path, budget: int, epochs: int) -> list[dict]:
    import ray

    from frugalnas.config import parse_config
    from frugalnas.runtime import tune_search
    from frugalnas.runtime.experiment import run_experiment
    from frugalnas.spaces import load_space
    from frugalnas.strategies import make_strategy

    fault_injection.ship_to_ray_workers()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    space = load_space({"family": "faulty-nb201", "network": NETWORK})
    strategy = make_strategy("random", space, seed=0)
    archs = [str(strategy.ask()) for _ in range(budget)]
    middle = archs[budget // 2]  # the candidate that gets the fault, half way through

    def run(name: str, faults: dict, **tweaks) -> dict:
        out = work / name
        space_file = work / f"{name}-space.yaml"
        space_file.write_text(json.dumps({"family": "faulty-nb201", "network": NETWORK, "faults": faults}))
        config = parse_config(tune_config(budget, epochs, space=str(space_file)))
        started = time.perf_counter()
        summary = run_experiment(config, out, log=lambda line: None)
        row = {"wall_seconds": time.perf_counter() - started, **accounting(summary, out, budget)}
        log(name, json.dumps(row))
        return row

    rows = []
    baseline = run("baseline", {})
    rows.append({"fault": "none (baseline, in-process)", "injected": 0, **baseline})
    os.environ["TUNE_GLOBAL_CHECKPOINT_S"] = "auto"  # Tune's default instead of the platform's second
    try:
        defaults = run("tune-default-snapshots", {})
    finally:
        os.environ["TUNE_GLOBAL_CHECKPOINT_S"] = tune_search.STATE_PERIOD_S
    rows.append({"fault": "none, with Tune's default period of saving the search's state", "injected": 0,
                 **defaults})
    for name, fault, what in [
            ("raises", {"kind": "raise", "step": 2}, "candidate's training raises (every attempt)"),
            ("diverges", {"kind": "nan", "step": 2}, "candidate's loss becomes NaN"),
            ("killed", {"kind": "kill", "step": 2, "marker": str(work / "killed-marker")},
             "candidate's process SIGKILLed (once)")]:
        row = run(name, {middle: fault})
        rows.append({"fault": what, "injected": 1, **row, "time_lost": row["wall_seconds"] - baseline["wall_seconds"]})
    ray.shutdown()
    return rows


# ---------------------------------------------------------------- a driver killed, a store filled


def cli_run(config: dict, out: Path, work: Path, *, extra: tuple = (), wrap: list | None = None, until=None,
            env_extra: dict | None = None) -> tuple[dict | None, float, str]:
    """`frugalnas run` as a process group of its own with its own local Ray; SIGKILLed once
    ``until(out, log_text)`` holds (if given). Returns (summary or None, wall seconds, output)."""
    path = work / f"{out.name}.yaml"
    path.write_text(json.dumps(config))
    command = [sys.executable, "-m", "frugalnas.cli", "run", str(path), "--out", str(out), "--json", *extra]
    log_path = work / f"{out.name}{'-resume' if extra else ''}.log"
    with own_ray_dir() as ray_dir:
        env = {**{k: v for k, v in os.environ.items() if not k.startswith(("RAY_ADDRESS", "MLFLOW_"))},
               "RAY_TMPDIR": str(ray_dir), "RAY_USAGE_STATS_ENABLED": "0", "PYTHONUNBUFFERED": "1", **(env_extra or {})}
        started = time.perf_counter()
        with open(log_path, "w") as sink, open(log_path.with_suffix(".out"), "w") as stdout:
            proc = subprocess.Popen((wrap or []) + command, stdout=stdout, stderr=sink, env=env,
                                    start_new_session=True)
        while proc.poll() is None:
            if until is not None and until(out, log_path.read_text(), proc):
                kill_process_group(proc)
                break
            time.sleep(0.2)
        proc.wait()
        wall = time.perf_counter() - started
    text = log_path.read_text()
    lines = log_path.with_suffix(".out").read_text().strip().splitlines()
    summary = json.loads(lines[-1]) if proc.returncode == 0 and lines else None
    return summary, wall, text


def candidate_reported(number: int):
    return lambda out, text, proc: any(r["candidate"] == number for r in reports(out))


def driver_kills(work: Path, budget: int, epochs: int) -> list[dict]:
    from frugalnas.runtime.darts_trainer import SNAPSHOT_FILE

    rows = []
    config = tune_config(budget, epochs)
    baseline, base_wall, _ = cli_run(config, work / "driver-baseline", work)
    base = {"wall_seconds": base_wall, **accounting(baseline, work / "driver-baseline", budget)}
    log("driver baseline", json.dumps(base))
    rows.append({"fault": "none (baseline, `frugalnas run`)", "injected": 0, **base})
    killed, kill_wall, _ = cli_run(config, work / "driver-killed", work, until=candidate_reported(budget // 2 + 1))
    assert killed is None
    resumed, resume_wall, _ = cli_run(config, work / "driver-killed", work, extra=("--resume",))
    row = {"wall_seconds": kill_wall + resume_wall, **accounting(resumed, work / "driver-killed", budget)}
    same = resumed is not None and sorted((t["arch"], t["accuracy"]) for t in resumed["trials"]) == sorted(
        (t["arch"], t["accuracy"]) for t in baseline["trials"])
    rows.append({"fault": "driver SIGKILLed mid-search, then `--resume`", "injected": 1, **row,
                 "time_lost": row["wall_seconds"] - base_wall, "same_result": same})
    log("driver killed", json.dumps(rows[-1]))

    straight, darts_wall, _ = cli_run(DARTS, work / "darts-baseline", work)
    rows.append({"fault": "none (baseline, DARTS `frugalnas run`)", "injected": 0, "wall_seconds": darts_wall,
                 "completed": straight is not None, "accounted": 1, "lost": 0})
    snapshot = lambda out, text, proc: (out / "ray-train" / "darts" / SNAPSHOT_FILE).exists()  # noqa: E731
    killed, kill_wall, _ = cli_run(DARTS, work / "darts-killed", work, until=snapshot)
    resumed, resume_wall, _ = cli_run(DARTS, work / "darts-killed", work, extra=("--resume",))
    same = resumed is not None and resumed["alphas"] == straight["alphas"] and resumed["best_arch"] == straight["best_arch"]
    rows.append({"fault": "DARTS driver SIGKILLed after its first checkpoint, then `--resume`", "injected": 1,
                 "wall_seconds": kill_wall + resume_wall, "completed": resumed is not None, "accounted": 1,
                 "lost": 0, "time_lost": kill_wall + resume_wall - darts_wall, "same_result": same})
    log("darts killed", json.dumps(rows[-1]))

    unshare = ["unshare", "--mount", "--propagation", "private"]
    probe = subprocess.run(unshare + ["true"], capture_output=True) if shutil.which("unshare") else None
    if probe is None or probe.returncode:
        rows.append({"fault": "tracking store full mid-search", "injected": 0, "note": "no mount namespace here"})
        return rows
    out = work / "store-full"
    (out / "mlflow").mkdir(parents=True)
    wrap = unshare + ["sh", "-c", f'mount -t tmpfs -o size=32m tmpfs "{out}/mlflow" && exec "$@"', "sh"]
    filled = []

    def fill(out_, text, proc):  # after the first candidate: fill the store's disk, once
        if "(1 finished)" in text and not filled:
            filled.append(subprocess.run(["nsenter", "--target", str(proc.pid), "--mount", "--", "sh", "-c",
                                          f'cat /dev/zero > "{out}/mlflow/filler"'], capture_output=True).returncode)
        return False

    summary, wall, _ = cli_run(config, out, work, wrap=wrap, until=fill)
    row = {"wall_seconds": wall, **accounting(summary, out, budget)}
    rows.append({"fault": "tracking store's disk filled mid-search", "injected": int(bool(filled)), **row,
                 "time_lost": wall - base_wall})
    log("store full", json.dumps(rows[-1]))
    return rows


# ---------------------------------------------------------------- a lost worker node


def node_loss(work: Path, budget: int, epochs: int) -> list[dict]:
    """A head running no candidates and two worker nodes of 1 CPU; Ray's default health checks."""
    rows = []
    config = tune_config(budget, epochs, concurrent=None)
    with ray_cluster(head_cpus=0) as cluster:
        def search(name: str, nodes=()) -> tuple[dict | None, float, float | None]:
            out = work / name
            path = work / f"{name}.yaml"
            path.write_text(json.dumps(config))
            started = time.perf_counter()
            with open(work / f"{name}.log", "w") as sink, open(work / f"{name}.out", "w") as stdout:
                proc = subprocess.Popen([sys.executable, "-m", "frugalnas.cli", "run", str(path), "--out", str(out),
                                         "--json"], env=cluster.driver_env(PYTHONUNBUFFERED="1"), stdout=stdout,
                                        stderr=sink, start_new_session=True)
            killed_at = detected = None
            while proc.poll() is None:
                if nodes and killed_at is None:  # lose the first node that runs an unfinished candidate
                    rows_now = reports(out)
                    done = {r["candidate"] for r in rows_now if r["epoch"] == epochs}
                    for node in nodes:
                        pids = set(descendants(node.proc.pid))
                        if {r["candidate"] for r in rows_now if r["pid"] in pids} - done:
                            cluster.kill_node(node)
                            killed_at = time.perf_counter()
                            break
                if killed_at and detected is None and "retry 1 of" in (work / f"{name}.log").read_text():
                    detected = time.perf_counter() - killed_at
                time.sleep(0.2)
            wall = time.perf_counter() - started
            lines = (work / f"{name}.out").read_text().strip().splitlines()
            summary = json.loads(lines[-1]) if proc.returncode == 0 and lines else None
            return summary, wall, detected

        workers = [cluster.add_worker(1), cluster.add_worker(1)]
        baseline, base_wall, _ = search("cluster-baseline")
        rows.append({"fault": "none (baseline, a head and two 1-CPU worker nodes)", "injected": 0,
                     "wall_seconds": base_wall, **accounting(baseline, work / "cluster-baseline", budget)})
        log("cluster baseline", json.dumps(rows[-1]))
        summary, wall, detected = search("cluster-node-lost", workers)
        rows.append({"fault": "a worker node SIGKILLed mid-candidate", "injected": 1, "wall_seconds": wall,
                     **accounting(summary, work / "cluster-node-lost", budget), "time_lost": wall - base_wall,
                     "seconds_to_retry": detected})
        log("node lost", json.dumps(rows[-1]))
    assert not processes_under(cluster.root)
    return rows


# ---------------------------------------------------------------- report


def markdown(rows: list[dict], args, info: dict, load: tuple) -> str:
    def cell(value, digits=1):
        if value is None:
            return "-"
        if isinstance(value, bool):
            return "yes" if value else "no"
        if isinstance(value, float):
            return f"{value:.{digits}f}"
        return str(value)

    lines = [
        "# Faults: what a search survives, measured",
        "",
        f"Generated by `benchmarks/faults.py` ({date.today()}; {info.get('cpu', 'CPU')}, {info['cpu_count']} cores "
        f"shared with other jobs: load average {load[0]:.1f} before, {load[1]:.1f} after; commit "
        f"{info.get('commit', '?')}). Search: random strategy over NAS-Bench-201 (channels 4, 1 cell per stage, 2 "
        f"stages) on the built-in digits, budget {args.budget} candidates of {args.epochs} epochs, one candidate at a "
        "time unless said otherwise (the cluster runs as many as its CPUs allow); `resources.max_failures` 2 (the "
        "default). The faulted candidate is the middle one. Each faulted run is compared with the baseline of its "
        "group (the row above it marked baseline), run in the same invocation; times are wall seconds on a shared "
        "machine, so a difference of a few seconds is noise.",
        "",
        "| fault | injected | search completed | candidates accounted for | lost | failed (recorded) | retries "
        "| duplicate trials | duplicate MLflow runs | MLflow runs left running | epochs reported twice | wall s "
        "| time lost s "
        "| same result as baseline |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for row in rows:
        if "note" in row:
            lines.append(f"| {row['fault']} | - | not run: {row['note']} |" + " |" * 11)
            continue
        accounted = f"{row.get('accounted', '-')}/{args.budget}" if "DARTS" not in row["fault"] else "supernet"
        lines.append("| " + " | ".join([
            row["fault"], cell(row.get("injected")), cell(row.get("completed")), accounted, cell(row.get("lost")),
            cell(row.get("failed")), cell(row.get("retries")), cell(row.get("duplicate_trials")),
            cell(row.get("duplicate_runs")), cell(row.get("runs_left_running")), cell(row.get("epochs_reported_twice")),
            cell(row.get("wall_seconds")), cell(row.get("time_lost")), cell(row.get("same_result"))]) + " |")
    injected = sum(r.get("injected") or 0 for r in rows)
    completed = sum(bool(r.get("completed")) for r in rows if r.get("injected"))
    lost = sum(r.get("lost") or 0 for r in rows)
    duplicates = sum((r.get("duplicate_trials") or 0) + (r.get("duplicate_runs") or 0) for r in rows)
    lines += ["", f"**{injected} faults injected, {completed} of the faulted searches completed, {lost} candidates "
              f"lost, {duplicates} duplicate evaluations.**"]
    for row in rows:
        if row.get("seconds_to_retry") is not None:
            lines.append(f"\nLost node: the driver reported the interrupted candidate's retry {row['seconds_to_retry']:.1f} s "
                         "after the node was killed (Ray's default health checks); the rest of the search then ran on "
                         "the one worker node left, which is most of its time lost.")
        if row["fault"].startswith("tracking store") and row.get("not_logged") is not None:
            lines.append(f"\nTracking store filled: {row['not_logged']} records could not be written (listed in "
                         "summary.json's `tracking.not_logged`); the search and the final retraining went on.")
    snapshot = [r for r in rows if r["fault"].startswith("none, with Tune's default period")]
    if snapshot:
        base = rows[0]["wall_seconds"]
        lines.append(f"\nThe platform saves the search's state every second (so a killed driver loses little "
                     f"more than the epochs in flight); the same search with Tune's default period (10 s or more) "
                     f"took {snapshot[0]['wall_seconds']:.1f} s against {base:.1f} s.")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="budget 4, 3 epochs")
    parser.add_argument("--work", default=None, help="scratch folder (default: a temp dir, removed)")
    args = parser.parse_args()
    args.budget, args.epochs = (4, 3) if args.quick else (8, 4)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    import torch

    torch.set_num_threads(1)
    work = Path(args.work or tempfile.mkdtemp(prefix="faults-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()[0]
    rows = []
    log("in-process faults")
    (work / "inprocess").mkdir(exist_ok=True)
    rows += in_process(work / "inprocess", args.budget, args.epochs)
    log("killed drivers, tracking store")
    (work / "cli").mkdir(exist_ok=True)
    rows += driver_kills(work / "cli", args.budget, args.epochs)
    log("lost node")
    (work / "cluster").mkdir(exist_ok=True)
    rows += node_loss(work / "cluster", args.budget, args.epochs)
    info = machine()
    text = markdown(rows, args, info, (load_before, os.getloadavg()[0]))
    write_results("faults", {"date": str(date.today()), "machine": info, "budget": args.budget, "epochs": args.epochs,
                             "rows": rows}, text)
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
