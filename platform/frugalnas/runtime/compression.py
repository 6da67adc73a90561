"""``frugalnas compression``: the compression study as an experiment kind.

Phases (each timed; ``summary.json`` holds the wall seconds of each, summed over every run into
the same OUT, so a resumed study still reports what each phase cost; ``phases_this_run`` is this
run's share):

1. **ingest** the reference data (as ``frugalnas run`` does: reused when the card matches);
2. **recode** its test split at every level (and all splits at the levels models are retrained on),
   one Ray task per level, so every level holds the same images;
3. **degradation**: train the reference model (``compression.model``) on reference data,
   ``repeats`` times, and score it on the test split at every level;
4. **recovery**: retrain it from scratch on each recovery level's training data and score it on
   that level's and on the reference test data;
5. **two-stage NAS** (when ``compression.two_stage`` names levels): search on reference data and on
   each level's data with the experiment's search settings (the same search engines as ``frugalnas
   run``), then retrain each searched architecture on reference and on compressed data: a 2x2 per
   level, every cell scored on both test sets;
6. **report**: accuracies with paired bootstrap intervals, recovery, plots, ``summary.json``, MLflow.

Training jobs run as Ray tasks (one per model, as many at once as the resources allow), each
writing its result into ``OUT/models/<job>/``; ``--resume`` skips the jobs that have one, reuses
recoded levels whose card matches, and continues an interrupted two-stage search.
"""
from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path

import numpy as np

from frugalnas.compression.jobs import RESULT_FILE, TrainJob, job_status, load_predictions, resolve_model, run_job
from frugalnas.compression.levels import Level, study_levels
from frugalnas.compression.stats import PairedBootstrap, interval, recovery_estimate
from frugalnas.config import CompressionConfig, ExperimentConfig
from frugalnas.data import open_dataset
from frugalnas.data.codecs import psnr
from frugalnas.data.recode import card_digest, recode
from frugalnas.errors import ConfigError, FrugalError
from frugalnas.runtime.experiment import (
    Log, ensure_ray, json_default, output_dir, prepare_dataset, prepare_embedding, prepare_entropy, ray_address,
    run_tracked)
from frugalnas.track import experiment as tracking

STUDY_FILE = "compression.json"  # marks an output folder as holding a compression study
REFERENCE = "reference"


class StudyInterrupted(FrugalError):
    """Some training jobs did not finish (Ctrl+C, a lost cluster); the study can be resumed."""


def run_compression(config: ExperimentConfig, out: str | Path | None = None, *, resume: bool = False,
                    log: Log = print) -> dict:
    """Run the study; returns the summary (also written to ``OUT/summary.json``)."""
    from frugalnas.runtime.search_engines import SearchInterrupted

    started = time.perf_counter()
    out = output_dir(config, out)
    if not resume and (out / STUDY_FILE).exists():
        raise ConfigError(f"{out} already holds a compression study: continue it with --resume, or choose another --out")
    if not resume and (out / "summary.json").exists():
        raise ConfigError(f"{out} holds the outputs of another experiment (summary.json): choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(config.model_dump(), indent=2) + "\n")
    (out / STUDY_FILE).write_text(json.dumps({"kind": "compression", "experiment": config.name}) + "\n")
    ray_address()  # a wrong RAY_ADDRESS fails here, before any work
    name, _ = config.space_spec()
    settings = config.compression or CompressionConfig()
    tracker = tracking.start_tracking(config, out, resume=resume, log=log, tags={
        "kind": "compression", "model": settings.model,
        # for the two-stage searches' runs
        "strategy": config.search.strategy, "selector": config.selection.policy, "space": name})
    return run_tracked(tracker, log, lambda: _study(config, settings, out, resume, log, tracker, started),
                       interrupted=(SearchInterrupted, StudyInterrupted))


class _Phases(dict):
    """Wall seconds per phase, measured by ``with phases("name"):``, in this run (``self``) and summed
    with the earlier runs into the same OUT (``total``, kept in ``OUT/phases.json`` after each phase,
    so a study stopped and resumed still says what each phase cost; the unfinished phase of a run
    killed without warning is the part that is lost)."""

    def __init__(self, path: Path, resume: bool):
        super().__init__()
        self.path = path
        self.total: dict[str, float] = json.loads(path.read_text()) if resume and path.exists() else {}

    @contextlib.contextmanager
    def __call__(self, name: str):
        started = time.perf_counter()
        try:
            yield
        finally:
            spent = time.perf_counter() - started
            self[name] = round(self.get(name, 0.0) + spent, 3)
            self.total[name] = round(self.total.get(name, 0.0) + spent, 3)
            self.path.write_text(json.dumps(self.total, indent=1) + "\n")


def _study(config: ExperimentConfig, settings: CompressionConfig, out: Path, resume: bool, log: Log, tracker,
           started: float) -> dict:
    phases = _Phases(out / "phases.json", resume)
    with phases("ingest"):
        reference_dir = prepare_dataset(config, out, log)
    card = open_dataset(reference_dir).card
    detection = card["task"] == "detection"
    if card["image_size"] is None and not detection:  # ultralytics letterboxes detection images itself
        raise ConfigError(f"the images of {reference_dir} differ in size: set dataset.image_size")
    if "test" not in card["splits"]:
        raise ConfigError(f"{reference_dir} has no test split: set dataset.test_fraction > 0")
    levels = study_levels(settings)
    model = resolve_model(settings.model, config.space_spec())
    if detection:
        model.model_yaml(card["classes"])  # a classifier fails here, saying what a detection study needs
        if "val" not in card["splits"]:
            raise ConfigError(f"a detector keeps its best epoch on the val split, and {reference_dir} has none: "
                              "set dataset.val_fraction > 0")
    seeds = [config.seed + i for i in range(settings.repeats)]
    log(f"compression study: {model.label} on {card['name']} ({_describe_reference(card, settings)}), "
        f"{len(levels['all'])} level(s), {settings.repeats} model(s) per configuration")
    ensure_ray(log)

    with phases("recode"):
        level_dirs = recode_levels(reference_dir, levels, out / "levels", log)
    train = _train_settings(config, detection)
    reference_dir = str(reference_dir)
    everywhere = {REFERENCE: reference_dir, **{level.name: level_dirs[level] for level in levels["all"]}}

    jobs = [TrainJob(f"reference-s{seed}", model, reference_dir, everywhere, {**train, "seed": seed},
                     {"phase": "degradation", "train_data": REFERENCE}) for seed in seeds]
    with phases("degradation"):
        run_jobs(jobs, out, "degradation", config, log, tracker)

    jobs = [TrainJob(f"retrain-{level.name}-s{seed}", model, level_dirs[level],
                     {level.name: level_dirs[level], REFERENCE: reference_dir}, {**train, "seed": seed},
                     {"phase": "recovery", "train_data": level.name})
            for level in levels["recovery"] for seed in seeds]
    with phases("recovery"):
        run_jobs(jobs, out, "recovery", config, log, tracker)

    searches = {}
    if levels["two_stage"]:
        with phases("two_stage_search"):
            for name, folder in [(REFERENCE, reference_dir)] + [(lv.name, level_dirs[lv]) for lv in levels["two_stage"]]:
                searches[name] = two_stage_search(config, name, Path(folder), out, resume, log, tracker)
        with phases("two_stage_retrain"):
            run_jobs(two_stage_jobs(config, levels["two_stage"], searches, level_dirs, reference_dir, train, seeds),
                     out, "two_stage", config, log, tracker)

    with phases("report"):
        summary = report(config, settings, out, card, levels, level_dirs, reference_dir, model, seeds, searches, log)
    summary["phases"] = dict(phases.total)
    summary["phases_this_run"] = dict(phases)
    summary["total_wall_seconds"] = round(time.perf_counter() - started, 3)
    summary["resumed"] = resume
    summary_path = out / "summary.json"
    if tracker:
        summary["tracking"] = {"uri": tracker.location.uri, "embedded": tracker.location.embedded,
                               "experiment": tracking.experiment_name(config), "experiment_id": tracker.experiment_id,
                               "run_id": tracker.parent_run_id}
    summary_path.write_text(json.dumps(summary, indent=2, default=json_default) + "\n")
    if tracker:
        from frugalnas.track.compression import log_study

        log_study(tracker, summary, [out / p for p in summary["plots"]], summary_path, Path(reference_dir))
    return summary


def _train_settings(config: ExperimentConfig, detection: bool) -> dict:
    """How every model of the study trains (less the seed): the ``final`` section, and for detectors
    the ``detection`` section too (ultralytics' image size and training arguments)."""
    if detection:
        from dataclasses import asdict

        from frugalnas.runtime.detect_search import detection_settings

        settings = asdict(detection_settings(config, config.final.epochs))
        settings.pop("seed")
        return settings
    return {"epochs": config.final.epochs, "batch_size": config.final.batch_size, "lr": config.final.lr}


def _describe_reference(card: dict, settings: CompressionConfig) -> str:
    if settings.reference_label:
        return settings.reference_label
    if card["quality"] is None:
        return f"{card['codec']} (lossless)"
    return f"{card['codec']} {Level(card['codec'], card['quality']).label}"


# ---------------------------------------------------------------- recode


def recode_levels(reference_dir: Path, levels: dict[str, list[Level]], folder: Path, log: Log) -> dict[Level, str]:
    """Every level's dataset folder under ``folder``: the reference's test split recoded (all splits
    for the levels models train on); reused when its card says it came from this reference."""
    import ray

    digest = card_digest(reference_dir)
    all_splits = open_dataset(reference_dir).split_names()
    trained_on = set(levels["recovery"]) | set(levels["two_stage"])
    todo, dirs = [], {}
    for level in levels["all"]:
        target = folder / level.name
        splits = all_splits if level in trained_on else ["test"]
        dirs[level] = str(target)
        card_path = target / "dataset.json"
        if card_path.exists():
            card = json.loads(card_path.read_text())
            if (card.get("recoded_from", {}).get("card_sha256") == digest and card["codec"] == level.codec
                    and card["quality"] == level.quality and set(splits) <= set(card["splits"])):
                continue
        todo.append((level, target, splits))
    if len(todo) < len(levels["all"]):
        log(f"recode: reusing {len(levels['all']) - len(todo)} recoded level(s) in {folder}")
    if not todo:
        return dirs
    log(f"recode: {len(todo)} level(s) from {reference_dir}, one Ray task each")
    task = ray.remote(num_cpus=1)(_recode_task)
    pending = {task.remote(str(reference_dir), str(target), level.codec, level.quality, splits): level
               for level, target, splits in todo}
    while pending:
        finished, _ = ray.wait(list(pending), num_returns=1)
        level = pending.pop(finished[0])
        card = ray.get(finished[0])
        stats = card["split_stats"]["test"]
        log(f"  {level.name}: test {stats['payload_bpp']:.3f} payload bits/pixel ({stats['stored_bpp']:.2f} stored), "
            f"PSNR {stats['mean_psnr']:.2f} dB, SSIM {stats['mean_ssim'] or float('nan'):.3f} "
            f"[{'+'.join(card['splits'])}, {card['recode_seconds']:.1f}s]")
    return dirs


def _recode_task(reference: str, target: str, codec: str, quality: int, splits: list[str]) -> dict:
    return recode(reference, target, codec=codec, quality=quality, splits=splits, overwrite=True)


# ---------------------------------------------------------------- training jobs as Ray tasks


def _train_job_task(job: dict, folder: str, torch_threads: int) -> dict:
    """One training job in a Ray worker."""
    import torch

    torch.set_num_threads(torch_threads)
    return run_job(TrainJob.from_dict(job), folder)


def run_jobs(jobs: list[TrainJob], out: Path, phase: str, config: ExperimentConfig, log: Log, tracker) -> dict:
    """Run the jobs that have no result yet as Ray tasks (``resources.cpus_per_trial`` /
    ``gpus_per_trial`` each, as many at once as the cluster holds); return every job's result.

    Plain tasks rather than Tune trials: these are fixed trainings, not a search, and Ray keeps its
    workers warm between tasks, so phase after phase reuses the same processes (a Tune run starts
    fresh trial actors every time)."""
    import ray

    if not jobs:
        return {}
    models = out / "models"
    status = {job.key: job_status(job, models / job.key) for job in jobs}
    pending = [job for job in jobs if status[job.key] != "done"]
    if len(pending) < len(jobs):
        log(f"{phase}: {len(jobs) - len(pending)} of {len(jobs)} model(s) already trained and scored, reusing them")
    rescore = sum(s == "rescore" for s in status.values())
    if rescore:
        log(f"{phase}: {rescore} trained model(s) to score on test sets added since")
    failures = []
    if pending:
        cpus, gpus = config.resources.cpus_per_trial, config.resources.gpus_per_trial
        log(f"{phase}: training {len(pending)} model(s), {config.final.epochs} epochs each, as Ray tasks "
            f"({cpus:g} CPU each)")
        task = ray.remote(_train_job_task).options(num_cpus=cpus, num_gpus=gpus, max_retries=1)
        running = {task.remote(job.to_dict(), str(models / job.key), max(1, int(cpus))): job for job in pending}
        try:
            while running:
                finished, _ = ray.wait(list(running), num_returns=1)
                job = running.pop(finished[0])
                try:
                    result = ray.get(finished[0])
                except ray.exceptions.RayError as error:
                    failures.append(job.key)
                    log(f"  model {len(pending) - len(running)}/{len(pending)} {job.key} failed: "
                        f"{str(error).strip().splitlines()[-1][:300]}")
                    continue
                first = next(iter(result["accuracy"]))
                metric = "mAP50-95" if result.get("metric") == "map50_95" else "accuracy"
                log(f"  model {len(pending) - len(running)}/{len(pending)} {job.key}: {metric} "
                    f"{result['accuracy'][first]:.4f} on {first} test data, trained in {result['train_seconds']:.1f}s")
        except KeyboardInterrupt:
            for ref in running:
                ray.cancel(ref, force=True)
            raise StudyInterrupted(f"{phase}: stopped with {len(running)} model(s) unfinished; what finished is kept in "
                                   f"{models}: continue with the same command plus --resume") from None
    missing = [job.key for job in jobs if job_status(job, models / job.key) != "done"]
    if missing:
        raise StudyInterrupted(f"{phase}: {len(missing)} model(s) did not finish ({', '.join(missing[:5])}); what "
                               f"finished is kept in {models}: continue with the same command plus --resume")
    results = {job.key: json.loads((models / job.key / RESULT_FILE).read_text()) for job in jobs}
    if tracker:
        from frugalnas.track.compression import log_job

        for job in pending:
            log_job(tracker, results[job.key])
    return results


# ---------------------------------------------------------------- two-stage NAS


def two_stage_search(config: ExperimentConfig, data_name: str, dataset_dir: Path, out: Path, resume: bool, log: Log,
                     tracker) -> dict:
    """Search with the experiment's search settings on one dataset (reference or a level); cached."""
    from frugalnas.runtime.search_engines import SEARCH_ENGINES, engine_for
    from frugalnas.spaces import load_space

    folder = out / "two_stage" / f"search-{data_name}"
    record_path = folder / "search.json"
    if record_path.exists():
        record = json.loads(record_path.read_text())
        log(f"two-stage: reusing the search on {data_name} data: {record['best_arch']}")
        return record
    if "val" not in open_dataset(dataset_dir).card["splits"]:
        raise ConfigError(f"two-stage search scores candidates on a val split, and {dataset_dir} has none: "
                          "set dataset.val_fraction > 0")
    config = config.model_copy(deep=True)  # prepare_entropy fills in this dataset's scores
    embedding = prepare_embedding(config, dataset_dir, log)
    prepare_entropy(config, dataset_dir, log)
    name, overrides = config.space_spec()
    space = load_space(name, overrides or None)
    engine = engine_for(config.search.strategy)
    child = None
    if tracker:
        from frugalnas.track.compression import search_tracker

        child = search_tracker(tracker, f"search-{data_name}", f"search on {data_name}",
                               {"search_data": data_name, "strategy": config.search.strategy,
                                "budget": config.search.budget, "selection": config.selection.policy})
    log(f"two-stage: searching on {data_name} data: {config.search.strategy} ({engine}) over {name}, "
        f"selection {config.selection.policy}, budget {config.search.budget}")
    search = SEARCH_ENGINES.get(engine)(config=config, space=space, dataset_dir=dataset_dir, out=folder,
                                        latents_path=embedding and embedding["path"], resume=resume, log=log,
                                        tracker=child)
    if child:
        tracking.log_search(child, config, search)
        child.finish("FINISHED")
    arch = space.parse(search["best_arch"])
    dataset = open_dataset(dataset_dir)
    score = "map50_95" if dataset.card["task"] == "detection" else "accuracy"  # what the trials were scored by
    record = {"search_data": data_name, "best_arch": str(arch), "space": space.config.model_dump(mode="json"),
              "space_name": name,
              "choices": {decision: str(options[i]) for (decision, options), i in zip(space.choices(), space.to_choices(arch))},
              "params": space.count_params(arch, len(dataset.classes), dataset.channels),
              "images_processed": int(search["images_processed"]), "wall_seconds": round(search["wall_seconds"], 3),
              "best_val_accuracy": max((t[score] for t in search.get("trials") or [] if t.get(score) is not None),
                                       default=None)}
    log(f"two-stage: best architecture on {data_name} data: {record['best_arch']} "
        f"({record['wall_seconds']:.1f}s, {record['images_processed']:,} images processed)")
    folder.mkdir(parents=True, exist_ok=True)
    record_path.write_text(json.dumps(record, indent=2) + "\n")
    return record


def two_stage_jobs(config, levels: list[Level], searches: dict, level_dirs: dict, reference_dir: str, train: dict,
                   seeds: list[int]) -> list[TrainJob]:
    """The retraining jobs of every level's 2x2 (search data x retraining data), each scored on the
    reference and on the level's test data. A cell shared by several levels (searched and retrained
    on reference data) is trained once and scored on every level."""
    from frugalnas.compression.jobs import ModelSpec

    jobs: dict[str, TrainJob] = {}
    for level in levels:
        data = {REFERENCE: reference_dir, level.name: level_dirs[level]}
        for search_on in (REFERENCE, level.name):
            model = ModelSpec(searches[search_on]["space"], searches[search_on]["best_arch"],
                              f"{searches[search_on]['space_name']}:{searches[search_on]['best_arch']}")
            for retrain_on in (REFERENCE, level.name):
                for seed in seeds:
                    key = f"two-stage-search-{search_on}-retrain-{retrain_on}-s{seed}"
                    if key not in jobs:
                        jobs[key] = TrainJob(key, model, data[retrain_on], {REFERENCE: reference_dir},
                                             {**train, "seed": seed},
                                             {"phase": "two_stage", "search_data": search_on, "train_data": retrain_on})
                    jobs[key].test_data[level.name] = level_dirs[level]
    return list(jobs.values())


# ---------------------------------------------------------------- report


def report(config, settings: CompressionConfig, out: Path, card: dict, levels: dict[str, list[Level]],
           level_dirs: dict[Level, str], reference_dir: str, model, seeds: list[int], searches: dict, log: Log) -> dict:
    """Accuracies with intervals, recovery, two-stage cells, plots; the summary."""
    models = out / "models"

    def predictions(prefix: str) -> list[dict]:
        return [load_predictions(models / f"{prefix}-s{seed}") for seed in seeds]

    detection = card["task"] == "detection"
    reference_models = predictions("reference")
    test_images = len(reference_models[0]["ids"])
    boot = PairedBootstrap(test_images, settings.bootstrap, seed=config.seed)
    confidence = settings.confidence

    if detection:
        from frugalnas.compression.detection import STAT_KEYS, mean_ap

        def scored(runs: list[dict], test: str, group: str) -> dict:
            """mAP50-95 of each model, recomputed on every resample of the images."""
            points, replicates, map50 = [], [], []
            for run in runs:
                stats = {key: run[f"{test}.{key}"] for key in STAT_KEYS}
                point, point50 = mean_ap(stats)
                points.append(point)
                map50.append(point50)
                replicates.append([mean_ap(stats, counts)[0] for counts in boot.counts])
            record = boot.summarise(np.array(points), boot.combine(np.array(replicates), group), confidence)
            return {**record, "map50": float(np.mean(map50))}
    else:
        labels = reference_models[0]["labels"]

        def scored(runs: list[dict], test: str, group: str) -> dict:
            return boot.accuracy(np.stack([run[test] == labels for run in runs]), group, confidence)

    reference_stats = card["split_stats"]["test"]
    base = scored(reference_models, REFERENCE, "reference-models")
    reference = {"codec": card["codec"], "quality": card["quality"], "label": _describe_reference(card, settings),
                 "dataset": reference_dir, "accuracy": base["accuracy"], "accuracy_ci": base["accuracy_ci"],
                 "accuracy_per_model": base["per_model"], "bpp": reference_stats["payload_bpp"],
                 "stored_bpp": reference_stats["stored_bpp"], "psnr": reference_stats["mean_psnr"],
                 "test_images": int(test_images), **({"map50": base["map50"]} if detection else {})}
    level_records, at_level = [], {}
    for level in levels["all"]:
        stats = open_dataset(level_dirs[level]).card["split_stats"]["test"]
        result = at_level[level] = scored(reference_models, level.name, "reference-models")
        drop = base["_replicates"] - result["_replicates"]
        level_records.append({
            "codec": level.codec, "quality": level.quality, "scale": level.scale, "name": level.name,
            "bpp": stats["payload_bpp"], "stored_bpp": stats["stored_bpp"], "psnr": stats["mean_psnr"],
            "ssim": stats["mean_ssim"], "accuracy": result["accuracy"], "accuracy_ci": result["accuracy_ci"],
            "accuracy_per_model": result["per_model"], "drop_points": 100 * (base["accuracy"] - result["accuracy"]),
            "drop_points_ci": [100 * v for v in interval(drop, confidence)],
            "tested_in": [part for part in ("degradation", "recovery", "two_stage") if level in levels[part]],
            **({"map50": result["map50"]} if detection else {})})

    recovery_records = []
    for level in levels["recovery"]:
        retrained_models = predictions(f"retrain-{level.name}")
        group = f"retrained-{level.name}"
        retrained = scored(retrained_models, level.name, group)
        on_reference = scored(retrained_models, REFERENCE, group)
        estimate = recovery_estimate(base, at_level[level], retrained, confidence)
        recovery_records.append({
            "codec": level.codec, "quality": level.quality, "scale": level.scale, "name": level.name,
            "original_accuracy": base["accuracy"], "original_accuracy_ci": base["accuracy_ci"],
            "compressed_accuracy": at_level[level]["accuracy"], "compressed_accuracy_ci": at_level[level]["accuracy_ci"],
            "retrained_accuracy": retrained["accuracy"], "retrained_accuracy_ci": retrained["accuracy_ci"],
            "retrained_on_reference_accuracy": on_reference["accuracy"],
            "retrained_on_reference_accuracy_ci": on_reference["accuracy_ci"],
            "retrained_accuracy_per_model": retrained["per_model"], **estimate})

    two_stage, architectures = _two_stage_records(levels["two_stage"], searches, seeds, predictions, scored)

    metric = "mAP50-95" if detection else "accuracy"
    plot_paths = _plots(out, reference, level_records, recovery_records, two_stage, levels, level_dirs, reference_dir,
                        card, config.name, metric)
    summary = {
        "experiment": config.name, "kind": "compression", "task": card["task"],
        # what every accuracy / accuracy_ci in this summary is: top-1 accuracy, or a detector's mAP50-95
        "metric": "map50_95" if detection else "accuracy",
        "model": {"spec": settings.model, "label": model.label, "arch": model.arch,
                  "params": json.loads((models / f"reference-s{seeds[0]}" / RESULT_FILE).read_text())["params"]},
        "reference": reference, "levels": level_records, "recovery": recovery_records,
        "two_stage": two_stage, "two_stage_architectures": architectures,
        "repeats": settings.repeats, "seeds": seeds, "epochs": config.final.epochs, "bootstrap": settings.bootstrap,
        "confidence": confidence,
        "codec_versions": {codec: open_dataset(level_dirs[next(lv for lv in levels["all"] if lv.codec == codec)])
                           .card["codec_versions"] for codec in dict.fromkeys(lv.codec for lv in levels["all"])},
        "dataset": {"path": reference_dir, "name": card["name"], "splits": card["splits"], "codec": card["codec"],
                    "quality": card["quality"], "image_size": card["image_size"]},
        "train_seconds": {key: json.loads((models / key / RESULT_FILE).read_text())["train_seconds"]
                          for key in sorted(os.listdir(models)) if (models / key / RESULT_FILE).exists()},
        "plots": [str(path.relative_to(out)) for path in plot_paths],
        "output_dir": str(out),
    }
    _print_report(summary, log)
    return summary


def _two_stage_records(levels, searches, seeds, predictions, scored) -> tuple[list[dict], list[dict]]:
    cells, architectures = [], []
    for level in levels:
        for search_on in (REFERENCE, level.name):
            search = searches[search_on]
            for retrain_on in (REFERENCE, level.name):
                runs = predictions(f"two-stage-search-{search_on}-retrain-{retrain_on}")
                group = f"two-stage-{search_on}-{retrain_on}"
                on_reference, on_level = scored(runs, REFERENCE, group), scored(runs, level.name, group)
                cells.append({
                    "codec": level.codec, "quality": level.quality, "level": level.name,
                    "search_data": "reference" if search_on == REFERENCE else "compressed",
                    "retrain_data": "reference" if retrain_on == REFERENCE else "compressed",
                    "arch": search["best_arch"], "params": search["params"],
                    "accuracy_on_reference": on_reference["accuracy"], "accuracy_on_reference_ci": on_reference["accuracy_ci"],
                    "accuracy_on_level": on_level["accuracy"], "accuracy_on_level_ci": on_level["accuracy_ci"],
                    "search_wall_seconds": search["wall_seconds"], "search_images_processed": search["images_processed"],
                    "search_best_val_accuracy": search["best_val_accuracy"]})
        on_reference, on_level = searches[REFERENCE], searches[level.name]
        differing = {name: [on_reference["choices"][name], on_level["choices"][name]]
                     for name in on_reference["choices"] if on_reference["choices"][name] != on_level["choices"][name]}
        architectures.append({"codec": level.codec, "quality": level.quality, "level": level.name,
                              "searched_on_reference": on_reference["best_arch"],
                              "searched_on_level": on_level["best_arch"], "same": not differing,
                              "differing_decisions": differing, "decisions": len(on_reference["choices"]),
                              "params": [on_reference["params"], on_level["params"]]})
    return cells, architectures


def _plots(out: Path, reference: dict, level_records, recovery_records, two_stage, levels, level_dirs, reference_dir,
           card, name: str, metric: str) -> list[Path]:
    import matplotlib.pyplot as plt

    from frugalnas.compression import plots  # here, not at the top: Ray workers import this module

    folder = out / "plots"
    folder.mkdir(exist_ok=True)
    figures = {"accuracy_vs_bpp.png": plots.accuracy_vs_bpp(level_records, reference,
                                                            f"{name}: {metric} against bits per pixel", metric),
               "accuracy_vs_level.png": plots.accuracy_vs_level(level_records, reference, name, metric),
               "psnr_vs_bpp.png": plots.psnr_vs_bpp(level_records, f"{name}: PSNR against bits per pixel")}
    if recovery_records:
        figures["recovery.png"] = plots.recovery_bars(recovery_records, f"{name}: retraining on compressed data", metric)
    if two_stage:
        figures["two_stage.png"] = plots.two_stage_plot(two_stage, f"{name}: two-stage NAS", metric)
    reference_data = open_dataset(reference_dir)
    ids, _ = reference_data.labels("test")
    example = int(np.sort(ids)[len(ids) // 2])  # a fixed, arbitrary test image
    _, image, _ = reference_data.arrays("test", ids=[example])
    examples: dict[str, list] = {}
    for level in levels["all"]:
        _, stored, _ = open_dataset(level_dirs[level]).arrays("test", ids=[example])
        examples.setdefault(level.codec, []).append((level.label, stored[0], psnr(image[0], stored[0])))
    figures["examples.png"] = plots.example_grid((reference["label"], image[0]), examples,
                                                 f"{name}: test image {example} at every level")
    paths = []
    for filename, figure in figures.items():
        figure.savefig(folder / filename, dpi=110)
        plt.close(figure)
        paths.append(folder / filename)
    return paths


def _print_report(summary: dict, log: Log) -> None:
    reference, metric = summary["reference"], "mAP50-95" if summary["metric"] == "map50_95" else "accuracy"
    low, high = reference["accuracy_ci"]
    log(f"reference ({reference['label']}): {metric} {reference['accuracy']:.4f} [{low:.4f}, {high:.4f}], "
        f"{reference['bpp']:.3f} payload bits/pixel")
    for record in summary["levels"]:
        low, high = record["accuracy_ci"]
        log(f"  {record['codec']:5s} {Level(record['codec'], record['quality']).label:7s} {record['bpp']:7.3f} bpp "
            f"{record['psnr']:6.2f} dB  {metric} {record['accuracy']:.4f} [{low:.4f}, {high:.4f}]")
    for record in summary["recovery"]:
        share = ("n/a (drop within noise)" if record["recovery"] is None else
                 f"{100 * record['recovery']:.1f}% [{100 * record['recovery_ci'][0]:.1f}, {100 * record['recovery_ci'][1]:.1f}]")
        log(f"recovery at {record['codec']} {Level(record['codec'], record['quality']).label}: "
            f"{record['compressed_accuracy']:.4f} -> retrained {record['retrained_accuracy']:.4f} "
            f"(reference {record['original_accuracy']:.4f}): {share}")
