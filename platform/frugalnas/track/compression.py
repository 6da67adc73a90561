"""What ``frugalnas compression`` records in MLflow: the study as a parent run (config, dataset card,
the degradation curve as metrics stepped by quality, recovery, plots, summary.json), one nested run
per trained model, and one nested run per two-stage search with its candidates nested under it."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from frugalnas.track.runs import ROLE_TAG, ExperimentTracker

JOB_TAG = "frugalnas.job"


def nested_run(tracker: ExperimentTracker, key: str, *, name: str, role: str, params: Mapping[str, Any],
               tags: Mapping[str, str] | None = None) -> str:
    """The child run ``key`` of the study's run: found again by tag (a resumed study), or created."""
    existing = tracker.client.search_runs(
        [tracker.experiment_id], max_results=1,
        filter_string=f"tags.mlflow.parentRunId = '{tracker.parent_run_id}' and tags.`{JOB_TAG}` = '{key}'")
    if existing:
        return existing[0].info.run_id
    run = tracker.client.create_run(tracker.experiment_id, run_name=name, tags={
        **tracker.tags, **(tags or {}), ROLE_TAG: role, JOB_TAG: key, "mlflow.parentRunId": tracker.parent_run_id})
    tracker.log_params(run.info.run_id, params)
    return run.info.run_id


def search_tracker(tracker: ExperimentTracker, key: str, name: str, params: Mapping[str, Any]) -> ExperimentTracker:
    """A tracker whose parent is a nested run for one two-stage search, so that the search's
    candidates nest under it (study run > search run > candidate runs)."""
    run_id = nested_run(tracker, key, name=name, role="search", params=params)
    return ExperimentTracker(tracker.location, tracker.experiment_id, run_id, tracker.tags)


def log_job(tracker: ExperimentTracker, result: Mapping[str, Any]) -> None:
    """One trained model: what it trained on, its seed, and its accuracy on every test set."""
    job = result["job"]
    run_id = nested_run(tracker, result["key"], name=result["key"], role="model",
                        params={"model": job["model"]["label"] or job["model"]["arch"], "arch": job["model"]["arch"],
                                "train_data": Path(job["train_data"]).name, "seed": job["settings"]["seed"],
                                "epochs": job["settings"]["epochs"], **job["tags"]},
                        tags={k: str(v) for k, v in job["tags"].items()})
    tracker.log_metrics(run_id, {**{f"accuracy.{name}": value for name, value in result["accuracy"].items()},
                                 "params": result["params"], "train_seconds": result["train_seconds"],
                                 "images_processed": result["images_processed"]})
    tracker.end_run(run_id)


def log_study(tracker: ExperimentTracker, summary: Mapping[str, Any], plots: list[Path], summary_path: Path,
              dataset_dir: Path) -> None:
    """The study's results on its parent run."""
    parent = tracker.parent_run_id
    tracker.set_tags(parent, {"frugalnas.metric": summary["metric"]})  # what the accuracy metrics hold
    tracker.log_file(parent, Path(dataset_dir) / "dataset.json", "dataset")
    reference = summary["reference"]
    tracker.log_metrics(parent, {"reference_accuracy": reference["accuracy"], "reference_bpp": reference["bpp"],
                                 "total_wall_seconds": summary["total_wall_seconds"],
                                 **{f"phase_seconds.{k}": v for k, v in summary["phases"].items()}})
    for record in summary["levels"]:
        # stepped by quality, so MLflow's chart of each metric is the codec's curve
        tracker.log_metrics(parent, {f"degradation.accuracy.{record['codec']}": record["accuracy"],
                                     f"degradation.bpp.{record['codec']}": record["bpp"],
                                     f"degradation.psnr.{record['codec']}": record["psnr"]}, step=record["quality"])
    for record in summary["recovery"]:
        name = f"{record['codec']}-{record['quality']}"
        tracker.log_metrics(parent, {f"recovery.retrained_accuracy.{name}": record["retrained_accuracy"],
                                     f"recovery.compressed_accuracy.{name}": record["compressed_accuracy"],
                                     **({f"recovery.share.{name}": record["recovery"]}
                                        if record["recovery"] is not None else {})})
    for path in plots:
        tracker.log_file(parent, path, "plots")
    tracker.log_file(parent, summary_path)
