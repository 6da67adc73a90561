"""``frugalnas run``: one experiment end to end.

ingest (if needed) -> embed (if the selector needs it) -> search -> derive the best architecture ->
retrain it from scratch on the full training split -> test accuracy -> ``OUT/summary.json``.

The search engine depends on the strategy: ask/tell strategies run as a Ray Tune search (one trial
per candidate); gradient-based strategies (``darts``) train a supernet under Ray Train.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from frugalnas.config import ExperimentConfig
from frugalnas.data import ingest, open_dataset
from frugalnas.data.torch_dataset import ImageSplit
from frugalnas.errors import ConfigError, FrugalError
from frugalnas.registry import Registry
from frugalnas.selection import make_selector
from frugalnas.selection.factory import needs_entropy, needs_latents
from frugalnas.spaces import load_space
from frugalnas.track import experiment as tracking
from frugalnas.train.classify import TrainSettings, evaluate, train_with_selector

Log = Callable[[str], None]
CARD_SETTINGS = ("source", "codec", "quality", "seed", "val_fraction", "test_fraction", "task", "pool_splits")


def output_dir(config: ExperimentConfig, out: str | Path | None) -> Path:
    return Path(out or config.output.dir or Path("runs") / config.name).expanduser().resolve()


def ray_address() -> str | None:
    """The cluster to run on: RAY_ADDRESS (``ray job submit`` sets it), or None for a local Ray."""
    address = os.environ.get("RAY_ADDRESS") or None
    if address and address.startswith(("http://", "https://")):
        raise ConfigError(f"RAY_ADDRESS is {address}, a dashboard address (what `ray job submit` takes); a run "
                          "connects to a cluster's GCS address (HOST:6379) or ray://HOST:10001. Submit the run with "
                          f"`ray job submit --address {address} --working-dir . -- frugalnas run ...`, "
                          "or unset RAY_ADDRESS to run on this machine")
    return address


def ensure_ray(log: Log) -> None:
    """Connect to the cluster in RAY_ADDRESS or start a local Ray."""
    import ray

    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    address = ray_address()
    if address:
        ray.init(address=address, log_to_driver=False)
        log(f"connected to the Ray cluster at {address}")
    else:
        ray.init(num_cpus=max(2, os.cpu_count() or 1), include_dashboard=False, log_to_driver=False,
                 configure_logging=False)


def prepare_dataset(config: ExperimentConfig, out: Path, log: Log) -> Path:
    """The ingested dataset for the config: reused when its card matches the settings."""
    settings = config.dataset
    folder = Path(settings.path).expanduser().resolve() if settings.path else out / "dataset"
    wanted = {"source": settings.source, "codec": settings.codec, "seed": config.seed, "task": settings.task,
              "pool_splits": settings.pool_splits}
    card_path = folder / "dataset.json"
    if card_path.exists():
        card = json.loads(card_path.read_text())
        from frugalnas.data.codecs import make_codec

        codec = make_codec(settings.codec, settings.quality)
        same = (card["source"] == settings.source and card["codec"] == settings.codec
                and card["quality"] == codec.quality and card["seed"] == config.seed
                and card.get("pool_splits", False) == settings.pool_splits
                and (settings.image_size is None or card["image_size"] == settings.image_size)
                and (settings.task is None or card["task"] == settings.task)
                and (settings.classes is None or card["classes"] == settings.classes))
        if same:
            log(f"dataset: reusing {folder}")
            return folder
        if settings.path:
            raise ConfigError(f"dataset.path {folder} holds a dataset ingested with other settings "
                              f"({ {k: card.get(k) for k in CARD_SETTINGS} }); wanted {wanted}: "
                              "point dataset.path elsewhere or delete it")
    log(f"dataset: ingesting {settings.source} ({settings.codec}) into {folder}")
    ingest(settings.source, folder, codec=settings.codec, quality=settings.quality, image_size=settings.image_size,
           val_fraction=settings.val_fraction, test_fraction=settings.test_fraction, seed=config.seed,
           task=settings.task, classes=settings.classes, pool_splits=settings.pool_splits, overwrite=True)
    return folder


def prepare_embedding(config: ExperimentConfig, dataset_dir: Path, log: Log) -> dict | None:
    if not needs_latents(config.selection.policy):
        return None
    from frugalnas.embed.latents import default_image_size, ensure_embedding

    settings = config.embedding
    size = settings.image_size or default_image_size(open_dataset(dataset_dir).card)
    log(f"embedding: {settings.kind} autoencoder, latent {settings.latent_dim}, {settings.epochs} epochs, {size}px")
    report = ensure_embedding(dataset_dir, kind=settings.kind, latent_dim=settings.latent_dim, epochs=settings.epochs,
                              image_size=size, seed=settings.seed,
                              progress=lambda i: (i["epoch"] % 5 == 0 or i["epoch"] == i["epochs"]) and log(
                                  f"  autoencoder epoch {i['epoch']}/{i['epochs']} loss {i['loss']:.4f}"))
    log(f"embedding: label agreement of 5 nearest neighbours {report['knn_agreement']['5']:.3f} "
        f"(raw pixels {report['pixel_knn_agreement']['5']:.3f})")
    if report.get("label_jaccard", {}).get("5") is not None:
        log(f"embedding: label-set Jaccard with 5 nearest neighbours {report['label_jaccard']['5']:.3f} (raw pixels "
            f"{report['pixel_label_jaccard']['5']:.3f}, random {report['random_label_jaccard']:.3f}), with the "
            f"furthest {report['furthest_label_jaccard']:.3f}")
    if report.get("warning"):
        log(f"embedding: warning: {report['warning']}")
    return report


def prepare_entropy(config: ExperimentConfig, dataset_dir: Path, log: Log) -> dict | None:
    """The entropy selector's scores (trained once per dataset and reference settings, then reused);
    fills ``selection.entropy_scores`` so that every candidate reads the same file."""
    if not needs_entropy(config.selection.policy) or config.selection.entropy_scores:
        return None
    from frugalnas.train.reference import ensure_entropy_scores

    ref = config.reference
    log(f"entropy: reference model {ref.arch}, {ref.epochs} epochs on the whole train split (once per dataset)")
    report = ensure_entropy_scores(dataset_dir, **ref.model_dump(),
                                   progress=lambda r: log(f"  reference epoch {r.epoch + 1}/{ref.epochs}: "
                                                          f"train acc {r.train_accuracy:.3f}"))
    log(f"entropy: {'reused' if report['cached'] else 'scored'} {report['path']} (one-off cost "
        f"{report['images_processed']:,} images, {report['train_seconds']:.0f}s)")
    config.selection.entropy_scores = report["path"]
    return report


def retrain_final(config: ExperimentConfig, space, arch, dataset_dir: Path, log: Log) -> dict:
    """Train the derived architecture from scratch on the full training split; test accuracy."""
    dataset = open_dataset(dataset_dir)
    train_data, test_data = ImageSplit(dataset, "train"), ImageSplit(dataset, "test")
    settings = TrainSettings(epochs=config.final.epochs, batch_size=config.final.batch_size, lr=config.final.lr,
                             seed=config.seed)
    torch.manual_seed(config.seed)
    model = space.build(arch, len(dataset.classes), dataset.channels)
    selector = make_selector("full", train_data.ids, train_data.labels, seed=config.seed)
    started = time.perf_counter()
    train_with_selector(model, train_data, selector, settings, progress=lambda r: (r.epoch + 1) % 5 == 0 and log(
        f"  final epoch {r.epoch + 1}/{settings.epochs}: train acc {r.train_accuracy:.3f}"))
    return {"final_test_accuracy": evaluate(model, test_data), "final_params": sum(p.numel() for p in model.parameters()),
            "final_epochs": settings.epochs, "final_images_processed": selector.images_processed,
            "final_wall_seconds": round(time.perf_counter() - started, 3), "model": model}


def classification_final(config: ExperimentConfig, space, arch, dataset_dir: Path, out: Path, log: Log) -> dict:
    """Retrain and test a classifier (:func:`retrain_final`), saved as ``OUT/final_model.pt``."""
    final = retrain_final(config, space, arch, dataset_dir, log)
    torch.save(final["model"].state_dict(), out / "final_model.pt")
    return final


#: How the best architecture is retrained, tested and saved, by the dataset's task: returns the
#: ``final_*`` summary entries plus ``model`` (the trained nn.Module, for tracking).
TASK_FINALS: Registry[Callable[..., dict]] = Registry("task")
TASK_FINALS.register("classification")(classification_final)


def task_final(task: str):
    if task not in TASK_FINALS:
        import frugalnas.runtime.detect_search  # noqa: F401  (registers "detection")
    return TASK_FINALS.get(task)


def run_experiment(config: ExperimentConfig, out: str | Path | None = None, *, resume: bool = False,
                   log: Log = print) -> dict:
    """Run the whole experiment; returns the summary (also written to ``OUT/summary.json``).

    With ``tracking.enabled`` (the default) the tracking store is checked first, so a server that is
    down, or a store on a full or read-only disk, fails the run before any training; the run is then
    recorded in MLflow as it goes. If the store breaks later, the experiment goes on: each record
    that failed is reported, and listed in the summary's ``tracking.not_logged``."""
    from frugalnas.runtime.search_engines import SearchInterrupted

    started = time.perf_counter()
    out = output_dir(config, out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps(config.model_dump(), indent=2) + "\n")
    except OSError as error:
        raise FrugalError(f"cannot write to the output folder {out}: {error.strerror or error}; free space there "
                          "or choose another --out") from None
    ray_address()  # a wrong RAY_ADDRESS fails here, before any work
    tracker = tracking.start_tracking(config, out, resume=resume, log=log)
    summary = run_tracked(tracker, log, lambda: _run_tracked(config, out, resume, log, tracker, started),
                          interrupted=(SearchInterrupted,))
    if tracker:
        not_logged = tracker.not_logged()
        if not_logged != summary["tracking"]["not_logged"]:  # the last records failed: say so in the file
            summary["tracking"]["not_logged"] = not_logged
            write_summary(out, summary)
    return summary


def run_tracked(tracker, log: Log, work, *, interrupted: tuple[type[BaseException], ...] = ()):
    """``work()``, then the end of the experiment's MLflow run (when ``tracker``): FINISHED, KILLED when
    it stopped by one of ``interrupted`` or Ctrl+C (its outputs are resumable), FAILED otherwise (with
    the error). Shared by every experiment kind: run, fidelity, compression."""
    end = "the experiment run's end"
    try:
        result = work()
    except (*interrupted, KeyboardInterrupt):
        if tracker:
            record(tracker, end, log, tracker.finish, "KILLED")
        raise
    except BaseException as error:
        if tracker:
            record(tracker, end, log, tracker.finish, "FAILED", f"{type(error).__name__}: {error}")
        raise
    if tracker:
        record(tracker, end, log, tracker.finish, "FINISHED")
    return result


def record(tracker, what: str, log: Log, method, *args):
    """``method(*args)``, one step of recording the experiment in MLflow. If the store broke since the
    start (a server gone, a disk full or made read-only), the failure is reported and kept for the
    summary (``tracking.not_logged``), and the experiment goes on: its results matter more than
    their copy in MLflow. Returns what ``method`` returned, None when it failed."""
    try:
        return method(*args)
    except Exception as error:  # MLflow, SQLAlchemy and the OS raise many kinds; all mean "not recorded"
        entry = tracker.record_not_logged(what, error)
        log(f"tracking: MLflow did not record {what} ({entry['error']}); the experiment goes on")
        return None


def write_summary(out: Path, summary: dict) -> None:
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=json_default) + "\n")


def _run_tracked(config: ExperimentConfig, out: Path, resume: bool, log: Log, tracker, started: float) -> dict:
    from frugalnas.runtime.search_engines import SEARCH_ENGINES, engine_for

    name, overrides = config.space_spec()
    space = load_space(name, overrides or None)
    truth = load_search_ground_truth(config, space, log)  # a bad table fails before any data work
    dataset_dir = prepare_dataset(config, out, log)
    card = open_dataset(dataset_dir).card
    if "val" not in card["splits"]:
        raise ConfigError(f"the search scores candidates on a val split, and {dataset_dir} has none: "
                          "set dataset.val_fraction > 0")
    embedding = prepare_embedding(config, dataset_dir, log)
    prepare_entropy(config, dataset_dir, log)
    if tracker:
        record(tracker, "the dataset card and embedding report", log, tracking.log_dataset, tracker, dataset_dir,
               embedding)
    engine = engine_for(config.search.strategy)
    ensure_ray(log)
    budget = "" if engine == "ray-train" else f", budget {config.search.budget}"
    log(f"search: {config.search.strategy} ({engine}) over {name}, selection {config.selection.policy}{budget}")
    search = SEARCH_ENGINES.get(engine)(config=config, space=space, dataset_dir=dataset_dir, out=out,
                                        latents_path=embedding and embedding["path"], resume=resume, log=log,
                                        tracker=tracker)
    if truth is not None:
        annotate_ground_truth(search, truth, space, log)
    if tracker:
        record(tracker, "the search's leaderboard and plots", log, tracking.log_search, tracker, config, search)
        if truth is not None:
            record(tracker, "the ground truth of the candidates", log, tracking.log_ground_truth, tracker,
                   search["ground_truth"], truth_by_arch(search))
    best = space.parse(search["best_arch"])
    log(f"best architecture: {search['best_arch']}")
    log(f"final: retraining it from scratch for {config.final.epochs} epochs on the full training split")
    final = task_final(card["task"])(config, space, best, dataset_dir, out, log)
    model = final.pop("model")
    summary = {
        "experiment": config.name,
        "strategy": config.search.strategy,
        "selection": config.selection.policy,
        "space": name,
        "space_settings": space.config.model_dump(mode="json"),
        "best_arch": search["best_arch"],
        "search_images_processed": int(search["images_processed"]),
        "search_wall_seconds": round(search["wall_seconds"], 3),
        **final,
        "total_wall_seconds": round(time.perf_counter() - started, 3),
        "dataset": {"path": str(dataset_dir), "name": card["name"], "splits": card["splits"], "codec": card["codec"],
                    "quality": card["quality"]},
        "embedding": embedding and {k: embedding[k] for k in ("kind", "latent_dim", "knn_agreement",
                                                               "pixel_knn_agreement", "path")},
        "output_dir": str(out),
        **{k: v for k, v in search.items()
           if k not in ("best_arch", "images_processed", "wall_seconds", "selector_history")},
    }
    export = export_after_run(out, summary, config, log)
    summary["export"] = {k: v for k, v in export.items() if k != "context"}
    summary["tracking"] = None
    if tracker:
        version = record(tracker, "the final model", log, lambda: tracking.log_final(
            tracker, config, space, best, model, final, export=export, summary=summary))
        summary["tracking"] = {"uri": tracker.location.uri, "embedded": tracker.location.embedded,
                               "experiment": tracking.experiment_name(config), "experiment_id": tracker.experiment_id,
                               "run_id": tracker.parent_run_id, "registered_model_version": version,
                               "not_logged": tracker.not_logged()}
    write_summary(out, summary)
    if tracker:
        record(tracker, "summary.json", log, tracking.log_summary, tracker, out / "summary.json", summary)
    return summary


def load_search_ground_truth(config: ExperimentConfig, space, log: Log):
    """The table of ``search.ground_truth`` (None without one), read and checked before any work."""
    settings = config.search.ground_truth
    if settings is None:
        return None
    from frugalnas.errors import DataError
    from frugalnas.fidelity.truth import load_ground_truth

    path = Path(settings.table).expanduser()
    if not path.is_file():
        raise DataError(f"search.ground_truth.table {settings.table} does not exist")
    truth = load_ground_truth(path, space, arch_column=settings.arch_column, metric_column=settings.metric_column)
    log(f"ground truth: {settings.metric_column} of {len(truth)} architectures in {path} (optimum {truth.optimum:.4f})")
    return truth


def annotate_ground_truth(search: dict, truth, space, log: Log) -> None:
    """Every candidate's ground truth (None when the table lacks it) and the search's regret: the
    table's optimum minus the ground truth of the chosen architecture."""
    missing = 0
    for trial in search.get("trials") or []:
        trial["ground_truth"] = truth.values.get(space.parse(trial["arch"]))
        missing += trial["ground_truth"] is None
    chosen = truth.values.get(space.parse(search["best_arch"]))
    found = [t["ground_truth"] for t in search.get("trials") or [] if t["ground_truth"] is not None]
    search["ground_truth"] = {
        "table": truth.source, "metric_column": truth.metric, "optimum": truth.optimum, "best_arch": chosen,
        "regret": None if chosen is None else truth.optimum - chosen,
        "best_evaluated": max(found) if found else None,
        "candidates_missing_from_table": missing}
    if chosen is None:
        log(f"ground truth: the chosen architecture is not in {truth.source}: no regret")
    else:
        log(f"ground truth: chosen architecture {chosen:.4f}, table optimum {truth.optimum:.4f}, "
            f"regret {truth.optimum - chosen:.4f}")
    if missing:
        log(f"ground truth: {missing} candidate(s) are not in {truth.source}")


def truth_by_arch(search: dict) -> dict[str, float]:
    return {t["arch"]: t["ground_truth"] for t in search.get("trials") or [] if t.get("ground_truth") is not None}


def export_after_run(out: Path, summary: dict, config: ExperimentConfig, log: Log) -> dict:
    """The run's model as deployable files in ``OUT/export`` (``frugalnas export``'s default formats).
    A failure is reported in the summary, not raised: the search and the trained model are kept."""
    from frugalnas.export.bundle import default_formats, load_run, write_bundle

    # what export reads; written again at the end with the export and tracking entries
    write_summary(out, summary)
    try:
        context = load_run(out)
        log(f"export: {out / 'export'}")
        report = write_bundle(context, out / "export", default_formats(context.model is None), log)
    except Exception as error:  # noqa: BLE001 (any failure: the run's results must not be lost to it)
        log(f"export: failed ({type(error).__name__}: {error}); try again with `frugalnas export {out}`")
        return {"error": f"{type(error).__name__}: {error}"}
    return {**report, "context": context}


def json_default(value):
    """``json.dumps(default=)`` for summaries: numpy scalars and arrays as JSON values, anything else as text."""
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)
