"""Search engines by kind: ask/tell strategies run as a Ray Tune search, gradient-based ones
(DARTS) train a supernet under Ray Train. Each engine returns a dict with at least ``best_arch``,
``images_processed`` and ``wall_seconds``."""
from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Callable

from frugalnas.config import GRADIENT_STRATEGIES
from frugalnas.errors import ConfigError, FrugalError
from frugalnas.registry import Registry

SEARCH_ENGINES: Registry[Callable[..., dict]] = Registry("search engine")


class SearchInterrupted(FrugalError):
    """The search stopped before its budget was spent (Ctrl+C, a lost cluster); it can be resumed."""


def engine_for(strategy: str) -> str:
    return "ray-train" if strategy in GRADIENT_STRATEGIES else "tune"


def trial_table(trials, metric: str = "accuracy") -> list[dict]:
    """One row per Tune trial (candidate): its architecture, how it ended and its last reported
    metrics, best first by ``metric`` (detection rows also carry mAP50, precision and recall); failed
    candidates last, with no score (whatever their last epoch reported: it is not a result of the
    candidate and the strategy was not told it)."""
    from frugalnas.runtime.tune_search import FINISHED, trial_outcome

    rows = []
    for trial in trials:
        metrics = trial.last_result or {}
        outcome = trial_outcome(trial, metric)
        rows.append({
            "arch": trial.config.get("arch"),
            "candidate": trial.config.get("suggestion"),  # the number in progress lines and MLflow run names
            "status": outcome["status"],
            metric: metrics.get(metric) if outcome["status"] == FINISHED else None,
            **{k: metrics.get(k) for k in EXTRA_TRIAL_METRICS.get(metric, ())},
            "params": metrics.get("params"),
            "flops": metrics.get("flops"),
            "images_processed": metrics.get("images_processed", 0),
            "subset_updates": metrics.get("subset_updates", 0),
            "epochs": outcome["epochs"],
            "seconds": metrics.get("seconds"),
            "retries": outcome["retries"],
            "error": outcome["error"],
        })
    return sorted(rows, key=lambda r: (r[metric] is None, -(r[metric] or 0), r["candidate"] or 0))


#: Besides its score, what a task's trial rows show (detection: ``map50_95`` is the score).
EXTRA_TRIAL_METRICS = {"map50_95": ("map50", "precision", "recall", "train_seconds", "hardness_seconds",
                                    "val_seconds", "setup_seconds")}


def classification_trials(*, config, space, dataset_dir: Path, latents_path: str | None, log) -> dict:
    """What a classification search runs: the trainable (runtime/candidates.py), its metric, and the
    cost metrics known before training (for objectives and constraints)."""
    from ray import tune

    from frugalnas.data.store import open_dataset
    from frugalnas.runtime.candidates import CandidateContext, candidate_metrics, train_candidate

    card = open_dataset(dataset_dir).card
    num_classes, channels, image_size = len(card["classes"]), card["channels"], card["image_size"] or 32
    context = CandidateContext(
        dataset_dir=str(dataset_dir), space=space,  # the object: a family registered only here works too
        selection=config.selection.model_dump(), latents_path=latents_path,
        train={"epochs": config.search.epochs_per_candidate, "batch_size": config.final.batch_size,
               "lr": config.final.lr, "seed": config.seed})
    return {"trainable": tune.with_parameters(train_candidate, context=context), "metric": "accuracy",
            "metrics_fn": lambda arch: candidate_metrics(space, arch, num_classes, channels, image_size),
            "objectives": config.search.objectives}


#: How a search's candidates train, by the dataset's task.
TASK_TRIALS: Registry[Callable[..., dict]] = Registry("task")
TASK_TRIALS.register("classification")(classification_trials)


def task_trials(task: str):
    if task not in TASK_TRIALS:
        import frugalnas.runtime.detect_search  # noqa: F401  (registers "detection"; imports ultralytics lazily)
    return TASK_TRIALS.get(task)


@SEARCH_ENGINES.register("tune")
def tune_search(*, config, space, dataset_dir: Path, out: Path, latents_path: str | None, resume: bool,
                log: Callable[[str], None], tracker=None) -> dict:
    import os

    from ray import tune

    from frugalnas.data.store import open_dataset
    from frugalnas.runtime.tracking import CandidateTracking
    from frugalnas.runtime.tune_search import (StrategySearcher, fit_keeping_sigint, latest_attempts, make_tuner,
                                               restore_tuner)
    from frugalnas.strategies import make_strategy

    task = open_dataset(dataset_dir).card["task"]
    trials = task_trials(task)(config=config, space=space, dataset_dir=dataset_dir, latents_path=latents_path, log=log)
    metric, trainable = trials["metric"], trials["trainable"]
    strategy = make_strategy(
        config.search.strategy, space, seed=config.seed, objectives=trials["objectives"],
        constraints=config.search.constraints or None, metrics_fn=trials["metrics_fn"], **config.search.params)
    searcher = StrategySearcher(strategy, space, budget=config.search.budget, metric=metric,
                                max_failures=config.resources.max_failures)
    storage, run_name = str(out / "tune"), "search"
    cpus = config.resources.cpus_per_trial
    import ray

    capacity = max(1, int(ray.cluster_resources().get("CPU", 1) // cpus))
    max_concurrent = config.resources.max_concurrent_trials or capacity
    started = time.perf_counter()
    experiment_path = os.path.join(storage, run_name)
    if not resume and os.path.exists(experiment_path):
        raise ConfigError(f"{out} already holds a search ({experiment_path}): continue it with --resume, "
                          "or choose another --out")
    if resume and tune.Tuner.can_restore(experiment_path):
        log(f"search: resuming {experiment_path}")
        tuner = restore_tuner(experiment_path, trainable, cpus_per_trial=cpus, gpus_per_trial=config.resources.gpus_per_trial)
    else:
        tuner = make_tuner(trainable, searcher, scheduler=config.search.scheduler,
                           epochs_per_candidate=config.search.epochs_per_candidate, max_concurrent=max_concurrent,
                           cpus_per_trial=cpus, gpus_per_trial=config.resources.gpus_per_trial, storage_path=storage,
                           name=run_name, log=log, max_failures=config.resources.max_failures,
                           callbacks=[CandidateTracking(tracker, space, log, metric, searcher)] if tracker else [])
    results = fit_keeping_sigint(tuner)
    # the state Tune saved: after a Ctrl+C, fit()'s ResultGrid marks the trials that were still running
    # as terminated, so a search interrupted during its last candidates would look complete. HyperBand
    # can leave a trial that trained all its epochs PAUSED at the end (a race in Ray 2.60): it ended too.
    # A candidate proposed again after losing its node has a trial per attempt: the last one counts.
    every_attempt = tune.ExperimentAnalysis(experiment_path).trials
    saved = latest_attempts(every_attempt)
    finished_trials = sum(trial.status in ("TERMINATED", "ERROR") or (
        trial.status == "PAUSED" and (trial.last_result or {}).get("epoch", 0) >= config.search.epochs_per_candidate)
        for trial in saved)
    candidates_run = len(results) - (len(every_attempt) - len(saved))  # an attempt may have no result, nor config
    if finished_trials < candidates_run or len(saved) < min(config.search.budget, space.size()):
        raise SearchInterrupted(
            f"search stopped after {finished_trials} of {config.search.budget} candidates; its state is saved in "
            f"{experiment_path}: continue it with the same command plus --resume")
    rows = trial_table(saved, metric)
    finished = [t for t in rows if t[metric] is not None]
    failed = sorted(t["candidate"] for t in rows if t[metric] is None)
    if failed:
        log(f"search: {len(failed)} of {len(rows)} candidates failed (candidates {', '.join(map(str, failed))}); "
            "see 'status' and 'error' in summary.json")
    if not finished:
        errors = "; ".join(t["error"] or "no result" for t in rows[:3])
        raise RuntimeError(f"no candidate finished training ({len(rows)} trials): {errors}")
    front = [{"arch": str(arch), **{k: v for k, v in result.items() if k in (metric, "params", "flops")}}
             for arch, result in strategy_front(saved, space, trials["objectives"], metric)]
    return {"best_arch": finished[0]["arch"], "images_processed": sum(t["images_processed"] or 0 for t in rows),
            "wall_seconds": time.perf_counter() - started, "metric": metric, "trials": rows, "pareto_front": front,
            "failed_candidates": failed, "candidate_retries": sum(t["retries"] for t in rows), "search_engine": "tune", "scheduler": config.search.scheduler, "max_concurrent_trials": max_concurrent}


def strategy_front(trials, space, objectives, metric: str = "accuracy") -> list:
    """The Pareto front over the objectives of the finished candidates' final metrics (single
    objective: empty)."""
    if len(objectives) < 2:
        return []
    from frugalnas.runtime.tune_search import FINISHED, numeric, trial_outcome
    from frugalnas.strategies.pareto import pareto_front

    told = [(space.parse(t.config["arch"]), numeric(t.last_result)) for t in trials
            if trial_outcome(t, metric)["status"] == FINISHED]
    return pareto_front(told, objectives)


@SEARCH_ENGINES.register("ray-train")
def darts_search(*, config, space, dataset_dir: Path, out: Path, latents_path: str | None, resume: bool,
                 log: Callable[[str], None], tracker=None) -> dict:
    """DARTS (first order: ``darts``; second order, unrolled: ``darts-2nd``) on Ray Train with
    ``resources.workers`` data-parallel workers. ``search.epochs_per_candidate`` is the number of
    supernet epochs (the supernet is the one candidate); ``search.params`` holds any other
    :class:`~frugalnas.train.darts.DartsSettings` field (lr, arch_lr, sync_batchnorm, ...)."""
    from frugalnas.runtime.darts_trainer import SNAPSHOT_FILE, run_darts_search

    settings = {"epochs": config.search.epochs_per_candidate, "batch_size": config.final.batch_size,
                "seed": config.seed, **config.search.params,
                "order": 2 if config.search.strategy == "darts-2nd" else 1}
    selection = config.selection.model_dump()
    if latents_path:
        selection["latents"] = latents_path
    storage, name = out / "ray-train", "darts"
    resuming = resume and (storage / name / SNAPSHOT_FILE).exists()
    if not resume and (storage / name).exists():
        raise ConfigError(f"{out} already holds a DARTS search ({storage / name}): continue it with --resume, "
                          "or choose another --out")
    if resuming:
        log(f"search: resuming the supernet from {storage / name}")
    elif resume and (storage / name).exists():  # stopped before its first checkpoint: nothing to continue
        log(f"search: {storage / name} holds no checkpoint yet; starting the supernet over")
        shutil.rmtree(storage / name)
    workers = config.resources.workers
    log(f"search: DARTS order {settings['order']}, {settings['epochs']} epochs, {workers} worker(s)")
    result = run_darts_search(dataset_dir, space, settings, selection, num_workers=workers, storage_path=storage,
                              name=name, resume=resuming, cpus_per_worker=min(1.0, config.resources.cpus_per_trial / 2)
                              if workers > 1 else config.resources.cpus_per_trial,
                              use_gpu=config.resources.gpus_per_trial > 0 or None,
                              max_failures=config.resources.max_failures)
    for record in result["history"]:
        log(f"  supernet epoch {record.get('epoch')}: {record.get('genotype')}")
    if tracker:
        from frugalnas.data.store import open_dataset
        from frugalnas.runtime.experiment import record
        from frugalnas.track.experiment import log_darts_epochs

        card = open_dataset(dataset_dir).card
        record(tracker, "the supernet epochs' runs", log, log_darts_epochs, tracker, space, result["history"],
               len(card["classes"]), card["channels"], card["image_size"] or 32)
    return {"best_arch": result["genotype"],
            "images_processed": result["images_processed"] + result["arch_images_processed"],
            "weight_images_processed": result["images_processed"],
            "arch_images_processed": result["arch_images_processed"],
            "subset_updates": result["subset_updates"], "wall_seconds": result["wall_seconds"],
            "search_engine": "ray-train", "workers": workers, "alphas": result["alphas"],
            "history": result["history"], "selector_history": result.get("selector_history")}
