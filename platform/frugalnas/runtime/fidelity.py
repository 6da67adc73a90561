"""``frugalnas fidelity``: measure how well cheap evaluations rank architectures like a ground-truth
table, as a grid of Ray Tune trials.

One trial per (architecture, arm, seed): it trains the architecture with the arm's selection policy
and reports its proxy scores at every image budget (:class:`frugalnas.fidelity.proxy.ProxyRun`),
checkpointing after each, so an interrupted measurement resumes with ``--resume`` without redoing
finished budgets. The driver then computes the rank statistics of every arm, score and budget
against the ground truth and the free baselines (:mod:`frugalnas.fidelity.report`), writes
``OUT/summary.json`` and the plots, and records everything in MLflow (a parent run, a nested run per
trial with its scores per budget).
"""
from __future__ import annotations

import json
import math
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from ray import tune

from frugalnas.config import ExperimentConfig, FidelityArm
from frugalnas.data.store import open_dataset
from frugalnas.data.torch_dataset import ImageSplit
from frugalnas.errors import ConfigError, DataError, FrugalError
from frugalnas.fidelity import seed_agreement
from frugalnas.fidelity.proxy import ProxyRun
from frugalnas.fidelity.report import SCORES, build_summary, learning_curve_scores, mean_over_seeds, rank_with_prior
from frugalnas.fidelity.truth import load_ground_truth, parse_architectures, stratified_sample
from frugalnas.fidelity.zero_cost import naswot, synflow
from frugalnas.selection.base import balanced_subset
from frugalnas.spaces import load_space

Log = Callable[[str], None]
RUN_NAME = "fidelity"
STATE_FILE = "fidelity_trial.pt"
TRIALS_DIR = "trials"  # OUT/trials/<key>.json: every finished trial's records, reused by later runs
SELECTION_DEFAULTS = {k: f.default for k, f in FidelityArm.model_fields.items() if k != "policy"}


class FidelityInterrupted(FrugalError):
    """The measurement stopped before every trial finished; ``--resume`` continues it."""


@dataclass
class FidelityContext:
    """What every trial shares (absolute paths: Tune trials change directory)."""

    dataset_dir: str
    space: dict
    arms: dict[str, dict]
    budgets: list[int]
    checkpoints: bool
    train: dict
    eval_split: str
    eval_ids: list[int] | None
    selector_inputs: dict[str, dict]  # arm -> inputs its policy needs (paths; loaded in the trial)
    results_dir: str = ""  # where a finished trial writes its records (see TRIALS_DIR)
    torch_threads: int = 1


def arm_budgets(budgets: list[int], arm: dict) -> list[int]:
    """The budgets an arm is run at (``max_budget`` skips the larger ones)."""
    limit = arm.get("max_budget")
    return [b for b in budgets if limit is None or b <= limit]


def fidelity_trial(config: dict, context: FidelityContext) -> None:
    """Tune function trainable: ``config = {"trial": {"arch", "arm", "seed", "index"}}``."""
    config = config["trial"]
    torch.set_num_threads(context.torch_threads)
    space = load_space(context.space)
    dataset = open_dataset(context.dataset_dir)
    arm = context.arms[config["arm"]]
    run = ProxyRun(space=space, arch=space.parse(config["arch"]), train_data=ImageSplit(dataset, "train"),
                   eval_data=ImageSplit(dataset, context.eval_split, ids=context.eval_ids),
                   num_classes=len(dataset.classes), channels=dataset.channels, settings=arm, train=context.train,
                   seed=config["seed"], budgets=arm_budgets(context.budgets, arm), checkpoints=context.checkpoints,
                   schedule_images=max(context.budgets),
                   selector_inputs=load_selector_inputs(context.selector_inputs.get(config["arm"], {})))
    done, state = [], None
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            state = torch.load(os.path.join(folder, STATE_FILE), weights_only=False)
        done = state["records"]
    records = done
    for record, state_fn in run.run(done, state):
        records = state_fn()["records"]
        if len(records) == len(run.budgets) and context.results_dir:  # finished: reusable by later runs
            save_json_atomically(Path(context.results_dir) / f"{config['key']}.json",
                                 {"trial": config, "records": records})
        with tempfile.TemporaryDirectory() as folder:
            torch.save(state_fn(), os.path.join(folder, STATE_FILE))
            tune.report({**record, "records": json.dumps(records), "arch": config["arch"], "arm": config["arm"],
                         "seed": config["seed"]}, checkpoint=tune.Checkpoint.from_directory(folder))


def save_json_atomically(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(f".{os.getpid()}.part")
    partial.write_text(json.dumps(data, indent=1) + "\n")
    os.replace(partial, path)


def trial_key(trial: dict, context: "FidelityContext", card: dict) -> str:
    """What determines a trial's result: two trials with the same key measure the same thing."""
    import hashlib

    arm = context.arms[trial["arm"]]
    # the arm's settings as given (a setting added to the config later, at its default, keeps the key)
    given = {k: v for k, v in arm.items() if v != SELECTION_DEFAULTS.get(k, object())}
    identity = {"arch": trial["arch"], "seed": trial["seed"], "arm": given, "budgets": arm_budgets(context.budgets, arm),
                "schedule_images": max(context.budgets) if context.checkpoints else None,
                "checkpoints": context.checkpoints, "train": context.train, "space": context.space,
                "eval_split": context.eval_split, "eval_ids": context.eval_ids,
                "selector_inputs": context.selector_inputs.get(trial["arm"]),
                "dataset": {k: card.get(k) for k in ("name", "source", "codec", "quality", "image_size", "splits",
                                                     "seed", "val_fraction", "test_fraction")}}
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:20]


def grid_digest(grid: list[dict]) -> str:
    import hashlib

    return hashlib.sha256(" ".join(sorted(t["key"] for t in grid)).encode()).hexdigest()[:10]


def load_cached(folder: Path, grid: list[dict]) -> dict[str, dict]:
    """The finished trials of ``grid`` already saved in ``folder`` (by key)."""
    cached = {}
    for trial in grid:
        path = folder / f"{trial['key']}.json"
        if path.exists():
            record = json.loads(path.read_text())
            cached[trial["key"]] = {"trial": trial, "records": record["records"]}
    return cached


def load_selector_inputs(paths: dict) -> dict:
    """The policy's extra inputs, loaded from the files the driver prepared."""
    inputs = dict(paths)
    if paths.get("latents"):
        from frugalnas.embed import load_latents

        inputs["latents"] = load_latents(paths["latents"])
    return inputs


# --------------------------------------------------------------------------- the driver


def choose_architectures(config: ExperimentConfig, space, log: Log):
    settings = config.fidelity
    if not Path(settings.table).expanduser().is_file():
        raise DataError(f"fidelity.table {settings.table} does not exist")
    truth = load_ground_truth(Path(settings.table).expanduser(), space, arch_column=settings.arch_column,
                              metric_column=settings.metric_column)
    if settings.architectures:
        archs = parse_architectures(settings.architectures, space, truth)
    else:
        sample = settings.sample
        archs = stratified_sample(truth, sample.k, low=sample.min, high=sample.max, bins=sample.bins,
                                  seed=config.seed if sample.seed is None else sample.seed)
    values = [truth(a) for a in archs]
    log(f"fidelity: {len(archs)} architectures of {truth.source} ({len(truth)} rows), {settings.metric_column} "
        f"{min(values):.2f}..{max(values):.2f}")
    return truth, archs


def free_baselines(names, space, archs, num_classes: int, channels: int, image_size: int,
                   images: torch.Tensor | None = None) -> dict[str, list[float]]:
    """:func:`free_scores` of a sample, with -inf made finite (:func:`ranked_last_if_infinite`)."""
    raw = free_scores(names, space, archs, num_classes, channels, image_size, images)
    return {name: ranked_last_if_infinite(values) for name, values in raw.items()}


def free_scores(names, space, archs, num_classes: int, channels: int, image_size: int,
                images: torch.Tensor | None = None) -> dict[str, list[float]]:
    """Scores that need no training, computed for every architecture on the driver; a zero-cost score
    is -inf for a network that passes no signal. ``images``: the minibatch the data-dependent ones
    (naswot) see; only they need it."""
    def naswot_at_init(arch) -> float:
        with torch.random.fork_rng():  # the same initialisation whatever else was scored before
            torch.manual_seed(0)
            return naswot(space.build(arch, num_classes, channels), images)

    compute = {
        "params": lambda a: float(space.count_params(a, num_classes, channels)),
        "flops": lambda a: float(space.count_flops(a, num_classes, channels, image_size)),
        "synflow": lambda a: synflow(space.build(a, num_classes, channels), channels, image_size),
        "naswot": naswot_at_init,
    }
    if "naswot" in names and images is None:
        raise ValueError("the naswot baseline needs a minibatch of images")
    torch.manual_seed(0)
    return {name: [compute[name](a) for a in archs] for name in names}


def ranked_last_if_infinite(values: list[float]) -> list[float]:
    """A zero-cost score is -inf for a network that passes no signal (every path cut): it ranks below
    every other. Rank statistics and JSON need finite numbers, so it becomes one below the lowest
    finite score (the order, all that is used, is unchanged)."""
    finite = [v for v in values if math.isfinite(v)]
    floor = min(finite) - 1.0 if finite else 0.0
    return [v if math.isfinite(v) else floor for v in values]


def zero_cost_images(dataset, n: int, seed: int) -> torch.Tensor:
    """A seeded class-balanced minibatch of ``n`` training images (all of them if fewer), as the
    trials see them."""
    ids, labels = dataset.labels("train")
    ids = balanced_subset(ids, labels, min(n, len(ids)), np.random.default_rng(seed))
    return ImageSplit(dataset, "train", ids=sorted(ids.tolist())).images


def prepare_selector_inputs(config: ExperimentConfig, dataset_dir: Path, log: Log) -> tuple[dict, dict]:
    """(arm -> what its policy needs, as file paths; one-off costs): the autoencoder DDS swaps with and
    the reference model whose prediction entropies the entropy selector samples by, each made once
    per dataset and settings (cached beside the dataset) and shared by every arm that needs it."""
    from frugalnas.selection.factory import needs_entropy, needs_latents

    inputs, one_off = {}, {}
    for name, arm in config.fidelity.arms.items():
        inputs[name] = {}
        if needs_latents(arm.policy):
            if "embedding" not in one_off:
                one_off["embedding"] = _embedding(config, dataset_dir, log)
            inputs[name]["latents"] = one_off["embedding"]["path"]
        if needs_entropy(arm.policy) and not arm.entropy_scores:
            if "entropy_reference" not in one_off:
                one_off["entropy_reference"] = _entropy_reference(config, dataset_dir, log)
            inputs[name]["entropy_scores"] = one_off["entropy_reference"]["path"]
    return {name: paths for name, paths in inputs.items() if paths}, one_off


def _embedding(config: ExperimentConfig, dataset_dir: Path, log: Log) -> dict:
    from frugalnas.embed.latents import default_image_size, ensure_embedding

    settings = config.embedding
    size = settings.image_size or default_image_size(open_dataset(dataset_dir).card)
    log(f"one-off: {settings.kind} autoencoder (latent {settings.latent_dim}, {settings.epochs} epochs, {size} px)")
    report = ensure_embedding(dataset_dir, kind=settings.kind, latent_dim=settings.latent_dim, epochs=settings.epochs,
                              image_size=size, seed=settings.seed)
    if report.get("warning"):
        log(f"one-off: warning: {report['warning']}")
    return {"kind": settings.kind, "latent_dim": settings.latent_dim, "epochs": settings.epochs, "path": report["path"],
            "knn_agreement": report.get("knn_agreement"), "pixel_knn_agreement": report.get("pixel_knn_agreement"),
            "warning": report.get("warning"), "images_processed": report.get("images_processed"),
            "wall_seconds": report.get("train_seconds")}


def _entropy_reference(config: ExperimentConfig, dataset_dir: Path, log: Log) -> dict:
    from frugalnas.train.reference import ensure_entropy_scores

    ref = config.reference
    log(f"one-off: entropy reference model {ref.arch}, {ref.epochs} epochs on the whole train split")
    report = ensure_entropy_scores(dataset_dir, **ref.model_dump())
    return {"arch": ref.arch, "epochs": ref.epochs, "path": report["path"],
            "images_processed": report.get("images_processed"), "wall_seconds": report.get("train_seconds")}


def eval_ids(dataset, split: str, n: int | None, seed: int) -> list[int] | None:
    if n is None:
        return None
    data = ImageSplit(dataset, split)
    if n >= len(data):
        return None
    return sorted(balanced_subset(data.ids, data.labels, n, np.random.default_rng(seed)).tolist())


def _short(images: int) -> str:
    return f"{images // 1000}k" if images >= 1000 and images % 1000 == 0 else f"{images:,}"


def trial_grid(archs, arms: dict, seeds: list[int]) -> list[dict]:
    """Every (architecture, arm, seed), arms interleaved so partial results stay comparable."""
    return [{"arch": str(arch), "arm": arm, "seed": seed, "index": i}
            for seed in seeds for i, arch in enumerate(archs) for arm in arms]


class TrialProgress(tune.Callback):
    """One line per finished trial."""

    def __init__(self, log: Log, total: int, truth: dict[str, float]):
        self.log, self.total, self.truth, self.finished = log, total, truth, 0

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.finished += 1
        t, result = trial.config["trial"], trial.last_result or {}
        records = json.loads(result.get("records", "[]"))
        shown = ", ".join(f"{_short(r['budget'])}: {r['accuracy']:.3f}" for r in records)
        self.log(f"  trial {self.finished}/{self.total}: arch {t['index'] + 1:02d} (truth {self.truth[t['arch']]:.2f}) "
                 f"{t['arm']} seed {t['seed']}: val acc {shown} ({result.get('time_total_s', 0):.0f}s)")

    def on_trial_error(self, iteration, trials, trial, **info):
        self.finished += 1
        t = trial.config["trial"]
        self.log(f"  trial {self.finished}/{self.total} FAILED: arch {t['index'] + 1:02d} {t['arm']} seed {t['seed']} "
                 f"({trial.error_file})")


class FidelityTracking(tune.Callback):
    """A nested MLflow run per trial, its scores logged at step = the budget."""

    def __init__(self, tracker, space, truth: dict[str, float], log: Log):
        self.tracker, self.space, self.truth, self.log = tracker, space, truth, log
        self.failures = 0

    def _run(self, trial) -> str:
        from frugalnas.track.runs import arch_params

        t = trial.config["trial"]
        return self.tracker.candidate_run(
            trial.trial_id, name=f"arch-{t['index'] + 1:02d}-{t['arm']}-seed{t['seed']}", arch=t["arch"],
            params={**arch_params(self.space, self.space.parse(t["arch"])), "arm": t["arm"], "seed": t["seed"],
                    "architecture_index": t["index"] + 1, "ground_truth": self.truth[t["arch"]]})

    def _guard(self, action, trial):
        try:
            action()
        except Exception as error:  # a tracking failure must not stop the measurement
            self.failures += 1
            self.log(f"  tracking: MLflow did not record trial {trial.trial_id} ({type(error).__name__}: "
                     f"{str(error).splitlines()[0][:200]}); the measurement goes on")

    def on_trial_start(self, iteration, trials, trial, **info):
        self._guard(lambda: self._run(trial), trial)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        metrics = {k: result[k] for k in ("accuracy", *SCORES[1:], "images_processed", "subset_updates", "seconds")
                   if isinstance(result.get(k), (int, float))}
        self._guard(lambda: self.tracker.log_metrics(self._run(trial), metrics, step=int(result["budget"])), trial)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._guard(lambda: self.tracker.end_run(self._run(trial), "FINISHED"), trial)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._guard(lambda: self.tracker.end_run(self._run(trial), "FAILED", str(trial.error_file)), trial)


def run_fidelity(config: ExperimentConfig, out: str | Path | None = None, *, resume: bool = False,
                 log: Log = print) -> dict:
    """Run the measurement; returns the summary (also written to ``OUT/summary.json``)."""
    from frugalnas.runtime.experiment import output_dir, ray_address, run_tracked
    from frugalnas.track import experiment as tracking

    if config.fidelity is None:
        raise ConfigError("the config has no 'fidelity' section: `frugalnas fidelity` needs at least "
                          "fidelity.table, arch_column, metric_column and budgets (see jobs/fidelity_nb201.yaml)")
    started = time.perf_counter()
    out = output_dir(config, out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(config.model_dump(), indent=2) + "\n")
    ray_address()
    name, _ = config.space_spec()
    tracker = tracking.start_tracking(config, out, resume=resume, log=log,
                                      tags={"kind": "fidelity", "space": name,
                                            "arms": ",".join(config.fidelity.arms)})
    return run_tracked(tracker, log, lambda: _run(config, out, resume, log, tracker, started),
                       interrupted=(FidelityInterrupted,))


def _run(config: ExperimentConfig, out: Path, resume: bool, log: Log, tracker, started: float) -> dict:
    from frugalnas.runtime.experiment import ensure_ray, prepare_dataset
    from frugalnas.runtime.tune_search import fit_keeping_sigint
    from frugalnas.track import experiment as tracking

    settings = config.fidelity
    name, overrides = config.space_spec()
    space = load_space(name, overrides or None)
    truth, archs = choose_architectures(config, space, log)  # bad tables fail before any data work
    dataset_dir = prepare_dataset(config, out, log)
    dataset = open_dataset(dataset_dir)
    card = dataset.card
    if settings.eval_split not in card["splits"]:
        raise ConfigError(f"fidelity.eval_split {settings.eval_split!r}: {dataset_dir} has splits "
                          f"{', '.join(card['splits'])}")
    num_classes, channels, image_size = len(card["classes"]), card["channels"], card["image_size"] or 32
    batch = (zero_cost_images(dataset, settings.zero_cost_images, config.seed)
             if "naswot" in settings.free_baselines else None)
    free = free_baselines(settings.free_baselines, space, archs, num_classes, channels, image_size, batch)
    inputs, one_off = prepare_selector_inputs(config, dataset_dir, log)
    if tracker:
        tracking.log_dataset(tracker, dataset_dir, one_off.get("embedding"))
    grid = trial_grid(archs, settings.arms, settings.seeds)
    truth_of = {str(a): truth(a) for a in archs}
    context = FidelityContext(
        dataset_dir=str(dataset_dir), space=space.config.model_dump(mode="json"),
        arms={arm: a.model_dump() for arm, a in settings.arms.items()}, budgets=list(settings.budgets),
        checkpoints=settings.checkpoints, train=settings.train.model_dump(), eval_split=settings.eval_split,
        eval_ids=eval_ids(dataset, settings.eval_split, settings.eval_images, config.seed), selector_inputs=inputs,
        results_dir=str(out / TRIALS_DIR))
    for trial in grid:
        trial["key"] = trial_key(trial, context, card)
    cached = load_cached(out / TRIALS_DIR, grid)
    pending = list({t["key"]: t for t in grid if t["key"] not in cached}.values())  # arms alike measure once
    ensure_ray(log)
    import ray

    capacity = max(1, int(ray.cluster_resources().get("CPU", 1) // config.resources.cpus_per_trial))
    concurrent = config.resources.max_concurrent_trials or capacity
    log(f"fidelity: {len(grid)} trials ({len(archs)} architectures x {len(settings.arms)} arms x "
        f"{len(settings.seeds)} seed(s)), budgets {', '.join(f'{b:,}' for b in settings.budgets)} images"
        f"{' (checkpoints of one run)' if settings.checkpoints else ''}, {concurrent} at a time"
        + (f"; {len(cached)} already measured in {out / TRIALS_DIR}" if cached else ""))
    storage = out / "tune"
    # one Tune experiment per grid: a measurement extended by more arms or seeds runs only what is new
    experiment_path = storage / f"{RUN_NAME}-{grid_digest(grid)}"
    if storage.exists() and any(storage.iterdir()) and not resume:
        raise ConfigError(f"{out} already holds a fidelity measurement ({storage}): continue it with --resume "
                          "(finished trials are reused, also after adding arms or seeds), or choose another --out")
    tune_started = time.perf_counter()
    results = []
    if pending:
        trainable = tune.with_resources(tune.with_parameters(fidelity_trial, context=context),
                                        {"cpu": config.resources.cpus_per_trial,
                                         "gpu": config.resources.gpus_per_trial})
        callbacks = [TrialProgress(log, len(pending), truth_of)]
        if tracker:
            callbacks.append(FidelityTracking(tracker, space, truth_of, log))
        os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
        if resume and tune.Tuner.can_restore(str(experiment_path)):
            log(f"fidelity: resuming {experiment_path}")
            tuner = tune.Tuner.restore(str(experiment_path), trainable=trainable, resume_unfinished=True,
                                       resume_errored=True)
        else:
            tuner = tune.Tuner(
                trainable, param_space={"trial": tune.grid_search(pending)},
                tune_config=tune.TuneConfig(max_concurrent_trials=concurrent, reuse_actors=True),
                run_config=tune.RunConfig(name=experiment_path.name, storage_path=str(storage), verbose=0,
                                          callbacks=callbacks, failure_config=tune.FailureConfig(max_failures=2)))
        results = fit_keeping_sigint(tuner)
        statuses = [t.status for t in tune.ExperimentAnalysis(str(experiment_path)).trials]
        finished = sum(s in ("TERMINATED", "ERROR") for s in statuses)
        if finished < len(statuses) or len(statuses) < len(pending):
            raise FidelityInterrupted(
                f"the measurement stopped after {finished} of {len(pending)} trials; its state is saved in "
                f"{experiment_path}: continue it with the same command plus --resume")
    by_key = {key: (record["records"], None) for key, record in cached.items()}
    for result in results:
        records = json.loads((result.metrics or {}).get("records", "[]"))
        error = None if result.error is None else str(result.error).splitlines()[0][:300]
        by_key.setdefault(result.config["trial"]["key"], (records, error))
    measured = [(trial, *by_key.get(trial["key"], ([], "not run"))) for trial in grid]
    summary = summarise(config, archs, truth, free, measured, one_off, log)
    summary.update({
        "experiment": config.name, "kind": "fidelity", "space": name,
        "space_settings": space.config.model_dump(mode="json"), "table": str(settings.table),
        "arch_column": settings.arch_column, "metric_column": settings.metric_column,
        "k": len(archs), "seeds": list(settings.seeds), "checkpoints": settings.checkpoints,
        "arm_settings": context.arms, "train": context.train, "eval_split": settings.eval_split,
        "eval_images": len(context.eval_ids) if context.eval_ids else card["splits"][settings.eval_split],
        "one_off": one_off, "trials_reused": len(cached),
        "trials_wall_seconds": round(time.perf_counter() - tune_started, 3),
        "total_wall_seconds": round(time.perf_counter() - started, 3), "output_dir": str(out),
        "dataset": {"path": str(dataset_dir), "name": card["name"], "splits": card["splits"], "codec": card["codec"],
                    "quality": card["quality"], "image_size": card["image_size"]},
    })
    write_outputs(summary, out, tracker, log)
    return summary


def summarise(config: ExperimentConfig, archs, truth, free, measured: list, one_off: dict, log: Log) -> dict:
    """``measured``: (trial, per-budget records, error or None) for every trial of the grid."""
    settings = config.fidelity
    budgets, arms, seeds = list(settings.budgets), list(settings.arms), list(settings.seeds)
    index = {str(a): i for i, a in enumerate(archs)}
    by_trial: dict[tuple[int, str, int], dict[int, dict]] = {}
    failed = []
    for trial, records, error in measured:
        by_trial[(index[trial["arch"]], trial["arm"], trial["seed"])] = {
            r["budget"]: r for r in learning_curve_scores(records)}
        if error is not None:
            failed.append({**trial, "error": error, "budgets_done": [r["budget"] for r in records]})

    def value(i: int, arm: str, seed: int, budget: int, key: str):
        """One trial's record at one budget (None where it was not measured)."""
        return by_trial.get((i, arm, seed), {}).get(budget, {}).get(key)

    per_budget = lambda i, arm, key: [  # noqa: E731  mean over seeds of one score, per budget
        mean_over_seeds([value(i, arm, s, b, key) for s in seeds]) for b in budgets]
    scores = {}
    for score in settings.scores:
        measured_score, *priors = score.split("+")
        values = {arm: [per_budget(i, arm, measured_score) for i in range(len(archs))] for arm in arms}
        if priors:  # SCORE+BASELINE[+...]: ranks among the sampled architectures, at each arm and budget
            for arm in arms:
                columns = [rank_with_prior([values[arm][i][b] for i in range(len(archs))], *(free[p] for p in priors))
                           for b in range(len(budgets))]
                values[arm] = [[columns[b][i] for b in range(len(budgets))] for i in range(len(archs))]
        scores[score] = values
    images = {arm: [_mean([value(i, arm, s, b, "images_processed") for i in range(len(archs)) for s in seeds])
                    for b in budgets] for arm in arms}
    seconds = {arm: [_mean([value(i, arm, s, b, "seconds") for i in range(len(archs)) for s in seeds])
                     for b in budgets] for arm in arms}
    log(f"fidelity: computing rank statistics ({settings.bootstrap} bootstrap resamples)")
    summary = build_summary(architectures=[str(a) for a in archs], truth=[truth(a) for a in archs], free=free,
                            scores=scores, images=images, seconds=seconds, budgets=budgets,
                            reference_arm=settings.reference_arm, primary=settings.scores[0],
                            draws=settings.bootstrap, seed=config.seed)
    # per arm, measured score and budget: how repeatable the order of the architectures is across seeds
    measured_scores = dict.fromkeys(score.split("+")[0] for score in settings.scores)
    summary["seed_agreement"] = {
        arm: {score: [seed_agreement([[value(i, arm, s, b, score) for i in range(len(archs))] for s in seeds])
                      for b in budgets] for score in measured_scores} for arm in arms}
    summary["failed_trials"] = failed
    return summary


def _mean(values):
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def write_outputs(summary: dict, out: Path, tracker, log: Log) -> None:
    from frugalnas.track.fidelity_plots import fidelity_curves, proxy_vs_truth

    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    figures = {"fidelity_curves.png": fidelity_curves(summary)}
    for score in summary["scores"]:
        figures[f"proxy_vs_truth_{score}.png"] = proxy_vs_truth(summary, score)
    for file, figure in figures.items():
        figure.savefig(out / file, dpi=110)
    print_table(summary, log)
    log(f"outputs in {out} (summary.json, {', '.join(figures)})")
    if tracker:
        parent = tracker.parent_run_id
        for file, figure in figures.items():
            tracker.log_figure(parent, figure, f"fidelity/{file}")
        for arm, entry in summary["arms"].items():
            for score, stats in entry["by_score"].items():
                for budget, tau in zip(summary["budgets"], stats["kendall_tau"]):
                    if tau is not None:
                        # MLflow metric names take no "+": accuracy+params is logged as accuracy_with_params
                        tracker.log_metrics(parent, {f"tau.{score.replace('+', '_with_')}.{arm}": tau}, step=budget)
        for name, baseline in summary["baselines"].items():
            if baseline["kendall_tau"] is not None:
                tracker.log_metrics(parent, {f"tau.free.{name}": baseline["kendall_tau"]})
        tracker.log_file(parent, out / "summary.json")
    else:
        import matplotlib.pyplot as plt

        for figure in figures.values():
            plt.close(figure)


def print_table(summary: dict, log: Log) -> None:
    budgets = summary["budgets"]
    head = "".join(f"{_short(b):>8s}" for b in budgets)
    for score in summary["scores"]:
        log(f"Kendall tau of {score} against {summary.get('metric_column', 'ground truth')} "
            f"({len(summary['architectures'])} architectures):")
        log(f"  {'arm':16s}{head}")
        for arm, entry in summary["arms"].items():
            taus = entry["by_score"][score]["kendall_tau"]
            log(f"  {arm:16s}" + "".join(f"{'-' if t is None else f'{t:+.2f}':>8s}" for t in taus))
    free = ", ".join(f"{name} {b['kendall_tau']:+.2f}" for name, b in summary["baselines"].items()
                     if b["kendall_tau"] is not None)
    if free:
        log(f"  free baselines: {free}")
