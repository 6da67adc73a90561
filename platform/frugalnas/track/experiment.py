"""What ``frugalnas run`` records in MLflow, step by step: the parent run and its config before any
training, the search's candidates and plots after the search, the final model at the end."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping

from frugalnas.track.location import check_reachable, resolve_location
from frugalnas.track.runs import ExperimentTracker, arch_params, flatten, log_table

Log = Callable[[str], None]


def experiment_name(config) -> str:
    return config.tracking.experiment or config.name


def start_tracking(config, out: Path, *, resume: bool, log: Log, tags: dict[str, str] | None = None
                   ) -> ExperimentTracker | None:
    """Check the tracking store (fail fast) and open the experiment's parent run; None when
    ``tracking.enabled`` is false. ``tags`` (on every run) default to a search's strategy,
    selector and space."""
    if not config.tracking.enabled:
        return None
    location = resolve_location(config.tracking.uri, out)
    check_reachable(location)
    name, _ = config.space_spec()
    tracker = ExperimentTracker.start(
        location, experiment_name(config), out, resume=resume, run_name=config.name,
        tags=tags or {"strategy": config.search.strategy, "selector": config.selection.policy, "space": name},
        params=flatten(config.model_dump(mode="json")))
    tracker.log_file(tracker.parent_run_id, out / "config.json")
    from frugalnas.track.ui import share_leaderboard_view

    share_leaderboard_view(tracker.client, tracker.experiment_id)  # accuracy and images first in the runs table
    shown = f"embedded store {location.uri}" if location.embedded else location.uri
    log(f"tracking: MLflow experiment {experiment_name(config)!r}, run {tracker.parent_run_id} ({shown})")
    return tracker


def log_dataset(tracker: ExperimentTracker, dataset_dir: Path, embedding: dict | None) -> None:
    tracker.log_file(tracker.parent_run_id, Path(dataset_dir) / "dataset.json", "dataset")
    if embedding:
        tracker.log_dict(tracker.parent_run_id, embedding, "dataset/embedding.json")
        tracker.log_metrics(tracker.parent_run_id, {"embedding_knn_agreement_5": embedding["knn_agreement"]["5"],
                                                    "pixel_knn_agreement_5": embedding["pixel_knn_agreement"]["5"]})


def log_selector_history(tracker: ExperimentTracker, run_id: str, history: list[dict] | None, title: str) -> None:
    """A selector's epoch records as JSON and as the membership / hardness plot."""
    from frugalnas.track.plots import selector_history_plot

    if not history:
        return
    tracker.log_dict(run_id, history, "selection/history.json")
    tracker.log_figure(run_id, selector_history_plot(history, title), "selection/history.png")


def log_darts_epochs(tracker: ExperimentTracker, space, history: list[dict], num_classes: int, channels: int,
                     image_size: int) -> None:
    """Each supernet epoch's derived architecture as a candidate run (DARTS has no separate trials)."""
    for record in history:
        arch = space.parse(record["genotype"])
        run_id = tracker.candidate_run(f"epoch-{record['epoch']}", name=f"epoch-{record['epoch'] + 1:03d}",
                                       arch=record["genotype"], params=arch_params(space, arch))
        metrics = {k: record[k] for k in ("train_accuracy", "train_loss", "arch_accuracy", "arch_loss",
                                          "images_processed", "arch_images_processed", "subset_updates", "seconds")
                   if record.get(k) is not None}
        if record.get("arch_accuracy") is not None:
            metrics["accuracy"] = record["arch_accuracy"]  # the supernet's accuracy on the held-out arch split
        metrics["params"] = space.count_params(arch, num_classes, channels)
        metrics["flops"] = space.count_flops(arch, num_classes, channels, image_size)
        tracker.log_metrics(run_id, metrics, step=record["epoch"] + 1)
        tracker.end_run(run_id)


def describe_experiment(tracker: ExperimentTracker, run_name: str) -> None:
    """Put a link on the experiment page that opens this run's candidates side by side.

    The experiment description (tag ``mlflow.note.content``) is shown on MLflow's experiment page,
    so comparing the candidates is one click from there; it names the latest run."""
    from frugalnas.track.ui import compare_runs_fragment, leaderboard_fragment

    candidates = tracker.candidate_runs()
    if not candidates:
        return
    link = compare_runs_fragment([r.info.run_id for r in candidates], [tracker.experiment_id])
    leaderboard = leaderboard_fragment(tracker.experiment_id)
    text = (f"**[Compare the {len(candidates)} candidates of run {run_name} side by side]({link})** "
            f"(accuracy, images processed, params, strategy, selector, architecture choices); "
            f"**[the leaderboard]({leaderboard})**: every run by accuracy, score and cost columns first.\n\n"
            f"Candidates are nested under their experiment run `{tracker.parent_run_id}`; sorting the runs "
            "table by a metric lists them all.")
    tracker.client.set_experiment_tag(tracker.experiment_id, "mlflow.note.content", text)
    tracker.set_tags(tracker.parent_run_id, {"mlflow.note.content": text})


def log_search(tracker: ExperimentTracker, config, search: Mapping[str, Any]) -> None:
    """The search's outcome on the parent run: leaderboard, search curve, accuracy/size front."""
    from frugalnas.track.plots import pareto_plot, search_curve

    parent = tracker.parent_run_id
    describe_experiment(tracker, config.name)
    trials = search.get("trials") or []
    metric = search.get("metric", "accuracy")
    tracker.set_tags(parent, {"frugalnas.best_arch": search["best_arch"]})
    tracker.log_metrics(parent, {"search_images_processed": search["images_processed"],
                                 "search_wall_seconds": search["wall_seconds"],
                                 "candidates": len(trials) or len(search.get("history") or [])})
    if trials:
        finished = [t[metric] for t in trials if t.get(metric) is not None]
        if finished:
            tracker.log_metrics(parent, {f"best_val_{metric}": max(finished)})
        log_table(tracker, parent, trials, "search/leaderboard.csv")
        ordered = sorted(trials, key=lambda t: t.get("candidate") or 0)
        title = f"{config.search.strategy} + {config.selection.policy}"
        tracker.log_figure(parent, search_curve([t.get(metric) for t in ordered],
                                                [t["images_processed"] or 0 for t in ordered], title, metric=metric),
                           "search/search_curve.png")
        front = search.get("pareto_front") or accuracy_size_front(trials, metric)
        tracker.log_figure(parent, pareto_plot(trials, front, f"{title}: {metric} against parameters", metric=metric),
                           "search/pareto_front.png")
        tracker.log_dict(parent, list(front), "search/pareto_front.json")
    if search.get("history"):
        tracker.log_dict(parent, search["history"], "search/supernet_history.json")
    if search.get("selector_history"):
        log_selector_history(tracker, parent, search["selector_history"], "supernet's selector")


def log_ground_truth(tracker: ExperimentTracker, ground_truth: Mapping[str, Any], by_arch: Mapping[str, float]) -> None:
    """The search's regret on the parent run and each candidate's ground truth on its run."""
    from frugalnas.track.runs import ARCH_TAG

    parent = tracker.parent_run_id
    tracker.log_metrics(parent, {f"ground_truth_{k}": v for k, v in ground_truth.items()
                                 if k in ("optimum", "best_arch", "regret", "best_evaluated") and v is not None})
    tracker.set_tags(parent, {"frugalnas.ground_truth_table": ground_truth["table"]})
    for run in tracker.candidate_runs():
        value = by_arch.get(run.data.tags.get(ARCH_TAG))
        if value is not None:
            tracker.log_metrics(run.info.run_id, {"ground_truth": value})


def accuracy_size_front(trials: list[dict], metric: str = "accuracy") -> list[dict]:
    """Candidates no other one beats on both the score (higher) and parameters (fewer)."""
    from frugalnas.strategies.pareto import pareto_front

    rows = [t for t in trials if t.get(metric) is not None and t.get("params") is not None]
    return [row for _, row in pareto_front([(t["arch"], t) for t in rows], [metric, "-params"])]


def log_final(tracker: ExperimentTracker, config, space, arch, model, final: Mapping[str, Any],
              export: Mapping[str, Any] | None = None, summary: Mapping[str, Any] | None = None) -> str | None:
    """The retrained model: metrics, architecture file, the model itself (with the export files of
    ``frugalnas export`` beside it), its registry version (tagged with the search's summary)."""
    parent = tracker.parent_run_id
    tracker.log_metrics(parent, {k: v for k, v in final.items()
                                 if k.startswith("final_") and isinstance(v, (int, float)) and not isinstance(v, bool)})
    for path in (final.get("model_files") or {}).values():  # detection: best.yaml and best.pt, as users load them
        tracker.log_file(parent, path, "ultralytics")
    name, overrides = config.space_spec()
    tracker.log_dict(parent, {"space": name, "space_settings": space.config.model_dump(mode="json"),
                              "arch": str(arch), "choices": arch_params(space, arch)}, "model/architecture.json")
    tracker.log_params(parent, {"best_" + k: v for k, v in arch_params(space, arch).items()})
    export = export or {}
    files = [Path(export["folder"]) / f for f in export.get("files", [])] if export.get("folder") else []
    context = export.get("context")
    version = tracker.log_model(model, registered_name=experiment_name(config) if config.tracking.register_model
                                else None, input_example=getattr(context, "inputs", None), extra_files=files,
                                version_tags=summary_tags(summary or {}))
    if version:
        tracker.set_tags(parent, {"frugalnas.registered_model": f"{experiment_name(config)}/{version}"})
    return version


#: Summary entries that go on the registered model version as tags (``frugalnas.<key>``).
SUMMARY_TAGS = ("experiment", "strategy", "selection", "space", "best_arch", "final_test_accuracy",
                "final_test_map50_95", "final_params", "final_epochs", "search_images_processed",
                "search_wall_seconds", "total_wall_seconds", "search_engine", "scheduler")


def summary_tags(summary: Mapping[str, Any]) -> dict[str, str]:
    """The search's summary as model-version tags: the headline entries, the dataset and the export."""
    tags = {f"frugalnas.{k}": summary[k] for k in SUMMARY_TAGS if summary.get(k) is not None}
    dataset = summary.get("dataset") or {}
    for key in ("name", "codec", "quality"):
        if dataset.get(key) is not None:
            tags[f"frugalnas.dataset.{key}"] = dataset[key]
    export = summary.get("export") or {}
    if export.get("formats"):
        tags["frugalnas.export_formats"] = ",".join(export["formats"])
    trials = summary.get("trials") or []
    if trials:
        tags["frugalnas.candidates"] = len(trials)
    return {k: str(v) for k, v in tags.items()}


def log_summary(tracker: ExperimentTracker, summary_path: Path, summary: Mapping[str, Any]) -> None:
    """``summary.json`` (written to ``summary_path``) and the experiment's total time."""
    tracker.log_file(tracker.parent_run_id, summary_path)
    tracker.log_metrics(tracker.parent_run_id, {"total_wall_seconds": summary["total_wall_seconds"]})
