"""The experiment YAML, as pydantic models: every key is validated before any work starts.

A bad file fails with :class:`ConfigError` naming the file, the key path, the value given and what
is allowed. ``load_config(path, overrides=["search.budget=10"])`` applies ``--set`` overrides first.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal, Optional, Union, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from frugalnas.errors import ConfigError
from frugalnas.validation import describe

Policy = Literal["full", "stream", "random", "entropy", "dynamic-random", "dds", "dds-coverage"]


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DatasetConfig(Section):
    source: str = Field("digits", description="digits | shapes[:N] | cifar:PATH | mnist:PATH | folder:PATH | yolo:PATH "
                                               "| voc:PATH")
    path: Optional[str] = Field(None, description="where the ingested dataset lives; default OUT/dataset")
    task: Optional[Literal["classification", "detection"]] = None
    classes: Optional[list[str]] = Field(None, description="voc: fix the class list and order; default: from the data")
    image_size: Optional[int] = Field(None, ge=4, le=4096)
    codec: str = Field("jpeg", description="jpeg | webp | avif | h264 | h265 | png | raw")
    quality: Optional[int] = Field(None, description="on the codec's own scale: quality 0..100, or CRF 0..51 for "
                                   "h264/h265; default: the codec's")
    val_fraction: float = Field(0.1, ge=0, lt=1)
    test_fraction: float = Field(0.2, ge=0, lt=1)
    pool_splits: bool = Field(False, description="ignore the source's splits and carve val and test from all images")

    @field_validator("codec")
    @classmethod
    def _known_codec(cls, name: str) -> str:
        return check_codec(name)

    @model_validator(mode="after")
    def _quality_in_range(self):
        if self.quality is not None:
            check_quality(self.codec, self.quality)
        return self


def check_codec(name: str, lossy: bool = False) -> str:
    """``name`` if it is a registered codec (a lossy one when ``lossy``); ValueError saying what is allowed."""
    from frugalnas.data.codecs import CODECS

    if name not in CODECS:
        raise ValueError(f"unknown codec {name!r}; allowed: {', '.join(CODECS.names())}")
    if lossy and not CODECS.get(name).lossy:
        lossy_names = [n for n in CODECS.names() if CODECS.get(n).lossy]
        raise ValueError(f"codec {name!r} is lossless, so it has no compression levels; allowed: {', '.join(lossy_names)}")
    return name


def check_quality(codec: str, quality: int) -> None:
    """ValueError when ``quality`` is outside ``codec``'s own scale."""
    from frugalnas.data.codecs import CODECS

    cls = CODECS.get(codec)
    if cls.lossy and not cls.quality_range[0] <= quality <= cls.quality_range[1]:
        raise ValueError(f"quality {quality} is out of range for codec {codec!r}: {cls.describe_scale()}")


class EmbeddingConfig(Section):
    kind: Literal["plain", "triplet", "attention"] = Field(
        "triplet", description="attention: box-supervised spatial gate, detection data only")
    latent_dim: int = Field(16, ge=2, le=1024)
    epochs: int = Field(10, ge=0, le=10_000)
    image_size: Optional[int] = Field(None, ge=8, le=1024)
    seed: int = Field(0, ge=0, description="the autoencoder's own seed: runs with any seed share one embedding")


class SelectionConfig(Section):
    policy: Policy = "dds"
    subset_size: Optional[int] = Field(200, ge=1, description="images per epoch; stream: null = a whole pass")
    hardness: float = Field(0.9, gt=0, le=1)
    mastery: float = Field(0.6, gt=0, le=1)
    warmup_epochs: int = Field(2, ge=0)
    curriculum_stages: int = Field(0, ge=0, le=20)
    index: Literal["exact", "kdtree"] = "kdtree"
    order: Literal["curriculum", "blocks", "shuffled"] = Field(
        "curriculum", description="dds/dynamic-random: training order of the subset")
    easy_quantile: Optional[float] = Field(None, gt=0, lt=1, description="dds/dynamic-random: easy above this "
                                           "quantile of the subset's hardness instead of above `hardness`")
    mastery_rule: Literal["accuracy", "easy-fraction"] = "accuracy"
    entropy_bin_width: float = Field(0.5, gt=0, description="entropy: log10 bin width (the paper: 0.5 for CIFAR-10)")
    entropy_scores: Optional[str] = Field(None, description="entropy: a Parquet file of (id, entropy) per training "
                                          "image; default: scored by the reference model")
    coverage_quantile: float = Field(0.9, gt=0, le=1, description="dds-coverage: replacements come from the share "
                                     "of each class nearest its latent centroid")

    @model_validator(mode="after")
    def _mastery_rule_needs_a_fixed_threshold(self):
        # the selector refuses this too, but only once a candidate trains: say it before any work
        if self.mastery_rule == "easy-fraction" and self.easy_quantile is not None:
            raise ValueError("mastery_rule 'easy-fraction' needs the fixed easy threshold (hardness): with "
                             "easy_quantile the easy fraction is about 1 - easy_quantile whatever the model has learnt")
        return self


class ReferenceConfig(Section):
    """The entropy selector's reference model, trained once per dataset and cached (Na et al. 2021)."""

    arch: str = Field("baseline:cnn", description="SPACE:ARCH of the reference model")
    epochs: int = Field(5, ge=1, le=10_000)
    batch_size: int = Field(64, ge=1)
    lr: float = Field(0.05, gt=0)
    seed: int = Field(0, ge=0)


class GroundTruthConfig(Section):
    """A tabular benchmark to look architectures up in (e.g. NAS-Bench-201's 200-epoch accuracy)."""

    table: str = Field(..., description="CSV with one row per architecture (path relative to the working directory)")
    arch_column: str = Field("arch", description="column with the space's canonical architecture string")
    metric_column: str = Field("accuracy", description="column with the ground-truth metric (higher is better)")


class SearchConfig(Section):
    strategy: str = "evolution"
    budget: int = Field(40, ge=1)
    scheduler: Literal["fifo", "asha", "hyperband"] = "fifo"
    epochs_per_candidate: int = Field(4, ge=1)
    objectives: list[str] = Field(default_factory=lambda: ["accuracy"])
    constraints: dict[str, float] = Field(default_factory=dict)
    params: dict[str, Any] = Field(default_factory=dict, description="strategy settings, e.g. population_size")
    ground_truth: Optional[GroundTruthConfig] = Field(
        None, description="look every candidate up in a table: the summary, leaderboard and MLflow carry its "
        "ground truth and the search's regret")


class TrainConfig(Section):
    epochs: int = Field(20, ge=0)
    batch_size: int = Field(64, ge=1)
    lr: float = Field(0.05, gt=0)


class DetectionConfig(Section):
    """How detection candidates and the final detector train (a detection data set with the yolo space)."""

    image_size: int = Field(640, ge=32, le=4096, description="ultralytics' training and test image size (imgsz)")
    hardness: Literal["thesis", "f1"] = Field("thesis", description="per-image hardness for the selectors: thesis "
                                              "(confidence x (1 if found else 0.1), per class) or f1")
    train_args: dict[str, Any] = Field(default_factory=dict, description="further ultralytics training arguments "
                                       "(optimizer, lr0, mosaic, nbs, ...), for candidates and the final model")


class ResourcesConfig(Section):
    workers: int = Field(1, ge=1, description="data-parallel Ray Train workers (gradient-based search)")
    cpus_per_trial: float = Field(1.0, gt=0)
    gpus_per_trial: float = Field(0.0, ge=0)
    max_concurrent_trials: Optional[int] = Field(None, ge=1, description="default: as many as the CPUs allow; "
                                                 "1 makes a search exactly reproducible")
    max_failures: int = Field(2, ge=-1, description="retries of a candidate (of the DARTS workers) after a failure: "
                              "a lost node, a killed process, an error; each resumes from its last epoch's "
                              "checkpoint; 0: none, -1: no limit")


class OutputConfig(Section):
    dir: Optional[str] = Field(None, description="default: runs/<name>")


class TrackingConfig(Section):
    enabled: bool = Field(True, description="record the experiment in MLflow")
    uri: Optional[str] = Field(None, description="MLflow tracking URI; default MLFLOW_TRACKING_URI, else an embedded "
                               "SQLite store in OUT/mlflow/")
    experiment: Optional[str] = Field(None, description="MLflow experiment and registered model name; default: name")
    register_model: bool = Field(True, description="register the final model in the MLflow model registry")


def _check_levels(levels: dict[str, list[int]], what: str, required: bool) -> dict[str, list[int]]:
    """Every codec registered and lossy, every list non-empty, every quality on its codec's scale."""
    if required and not levels:
        raise ValueError(f"no {what}: give at least one codec with a list of qualities, e.g. {{jpeg: [50, 10]}}")
    for codec, qualities in levels.items():
        check_codec(codec, lossy=True)
        if not qualities:
            raise ValueError(f"codec {codec!r} has an empty list of {what}: give at least one quality or drop the codec")
        for quality in qualities:
            check_quality(codec, quality)
    return levels


class CompressionConfig(Section):
    """``frugalnas compression``: what lossy compression of the data costs a model, what retraining on
    compressed data recovers, and two-stage NAS on compressed data. Qualities are on each codec's own
    scale (JPEG/WebP/AVIF quality, CRF for h264/h265)."""

    model: str = Field("baseline:cnn", description="the model studied: SPACE:ARCH (baseline:cnn, nb201:|...|) or "
                       "run:PATH (the best architecture of a finished `frugalnas run` in PATH)")
    reference_label: Optional[str] = Field(None, description="how plots name the reference data (default: its codec)")
    levels: dict[str, list[int]] = Field(
        default_factory=lambda: {"jpeg": [95, 75, 50, 30, 20, 15, 10, 5],
                                 "h264": [10, 18, 23, 28, 33, 37, 40, 43, 46, 51]},
        description="codec -> qualities at which the reference model is tested (the degradation curve)")
    recovery: dict[str, list[int]] = Field(
        default_factory=lambda: {"jpeg": [10], "h264": [40]},
        description="codec -> qualities at which models are retrained on compressed data ({} skips recovery)")
    two_stage: dict[str, list[int]] = Field(
        default_factory=dict, description="codec -> qualities for two-stage NAS: search and retrain on reference or "
        "compressed data, a 2x2 per level ({} skips it)")
    repeats: int = Field(1, ge=1, le=100, description="models trained per configuration, seeds seed, seed+1, ...")
    bootstrap: int = Field(1000, ge=100, le=100_000, description="bootstrap resamples for the intervals")
    confidence: float = Field(0.95, gt=0.5, lt=1, description="coverage of the intervals")

    @field_validator("levels")
    @classmethod
    def _levels(cls, value):
        return _check_levels(value, "levels", required=True)

    @field_validator("recovery", "two_stage")
    @classmethod
    def _optional_levels(cls, value):
        return _check_levels(value, "levels", required=False)


class SampleConfig(Section):
    """A seeded sample of architectures stratified by ground truth (equal-width bins over [min, max])."""

    k: int = Field(20, ge=2, description="architectures to sample")
    min: Optional[float] = Field(None, description="lowest ground truth admitted (default: the table's lowest)")
    max: Optional[float] = Field(None, description="highest ground truth admitted (default: the table's highest)")
    bins: int = Field(5, ge=1, description="equal-width ground-truth bins the sample is spread over")
    seed: Optional[int] = Field(None, description="default: the experiment's seed")


class FidelityArm(SelectionConfig):
    """One way of spending the image budget: a selection policy with its settings."""

    max_budget: Optional[int] = Field(None, ge=1, description="skip budgets above this many images for this arm "
                                      "(to afford the largest budgets for fewer arms)")

    @field_validator("curriculum_stages")
    @classmethod
    def _no_epoch_curriculum(cls, stages: int) -> int:
        if stages:
            raise ValueError("a rising mastery threshold is placed over a number of epochs, and a fidelity arm trains "
                             "to image budgets instead: use 0")
        return stages


class FidelityTrainConfig(Section):
    """How every proxy trains (SGD with Nesterov momentum; the schedule runs over the image budget)."""

    batch_size: int = Field(128, ge=1)
    lr: float = Field(0.1, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(5e-4, ge=0)
    schedule: Literal["cosine", "onecycle"] = "onecycle"


MEASURED_SCORES = ("accuracy", "tse", "tse_last_quarter", "accuracy_gain")  # fidelity.report.SCORES + CURVE_SCORES
FreeBaseline = Literal["params", "flops", "synflow", "naswot"]
FREE_BASELINES = get_args(FreeBaseline)


class FidelityConfig(GroundTruthConfig):
    """``frugalnas fidelity``: how well cheap evaluations rank architectures like the ground truth."""

    architectures: Optional[list[str]] = Field(None, description="architectures to measure (canonical strings); "
                                               "default: a stratified sample (see sample)")
    sample: SampleConfig = Field(default_factory=SampleConfig)
    budgets: list[int] = Field(..., min_length=1, description="training images per architecture, e.g. [5000, 100000]")
    checkpoints: bool = Field(False, description="false: a fresh run per budget, its schedule over that budget; "
                              "true: one run per architecture and arm, scored when it reaches each budget "
                              "(cheaper; the schedule runs over the largest budget)")
    arms: dict[str, FidelityArm] = Field(default_factory=lambda: {"stream": FidelityArm(policy="stream")},
                                         min_length=1)
    reference_arm: str = Field("stream", description="the arm the others are compared with (paired tau difference)")
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1,
                             description="initialisation and subset seeds; proxy scores are averaged over them")
    scores: list[str] = Field(default_factory=lambda: ["accuracy", "tse", "tse_last_quarter"], min_length=1,
                              description="accuracy: validation accuracy at the budget; tse: minus the mean training "
                              "loss over the run (Ru et al. 2021); tse_last_quarter: the same over its last quarter; "
                              "accuracy_gain: the accuracy gained since the first budget (needs checkpoints); "
                              "SCORE+BASELINE (e.g. accuracy+params, or accuracy+params+naswot): the mean of an "
                              "architecture's ranks by the score and by each free baseline named, all listed in "
                              "free_baselines")
    free_baselines: list[FreeBaseline] = Field(default_factory=lambda: ["params", "flops", "synflow", "naswot"],
                                               description="scores of the untrained network: params, flops, synflow "
                                               "(no data), naswot (one minibatch of training images)")
    zero_cost_images: int = Field(128, ge=2, description="images in the seeded class-balanced training minibatch "
                                  "naswot scores each untrained network on (the authors' 128)")
    eval_split: str = Field("val", description="held-out split the accuracy score is measured on")
    eval_images: Optional[int] = Field(None, ge=10, description="score on a seeded class-balanced sample of the "
                                       "eval split of this size (default: all of it)")
    bootstrap: int = Field(2000, ge=100, description="bootstrap resamples of the architectures for intervals")
    train: FidelityTrainConfig = Field(default_factory=FidelityTrainConfig)

    @field_validator("budgets")
    @classmethod
    def _ascending(cls, budgets: list[int]) -> list[int]:
        if any(b < 1 for b in budgets) or sorted(set(budgets)) != budgets:
            raise ValueError(f"budgets must be positive image counts in ascending order without repeats, got {budgets}")
        return budgets

    @field_validator("arms")
    @classmethod
    def _arm_names(cls, arms: dict) -> dict:
        bad = [name for name in arms if not re.fullmatch(r"[A-Za-z0-9_.-]+", name)]
        if bad:
            raise ValueError(f"arm names may hold letters, digits and _.- only, got {bad}")
        return arms

    @field_validator("scores", "free_baselines", "seeds")
    @classmethod
    def _unique(cls, values: list) -> list:
        if len(set(values)) != len(values):
            raise ValueError(f"entries must not repeat, got {values}")
        return values

    @field_validator("scores")
    @classmethod
    def _known_scores(cls, scores: list[str]) -> list[str]:
        for score in scores:
            measured, *priors = score.split("+")
            if measured not in MEASURED_SCORES or any(p not in FREE_BASELINES for p in priors) \
                    or len(set(priors)) != len(priors):
                raise ValueError(f"unknown score {score!r}; allowed: {', '.join(MEASURED_SCORES)}, or one of them "
                                 f"+ one or more different free baselines ({', '.join(FREE_BASELINES)}), "
                                 "e.g. accuracy+params or accuracy+params+naswot")
        return scores

    @model_validator(mode="after")
    def _gain_along_one_run(self) -> "FidelityConfig":
        if not any(s.split("+")[0] == "accuracy_gain" for s in self.scores):
            return self
        if not self.checkpoints:
            raise ValueError("score accuracy_gain is the gain along one run: it needs checkpoints: true "
                             "(without, every budget is a separate run)")
        if len(self.budgets) < 2:
            raise ValueError("score accuracy_gain is measured from the first budget on: it needs two budgets or more")
        return self

    @model_validator(mode="after")
    def _priors_are_computed(self) -> "FidelityConfig":
        missing = sorted({p for s in self.scores for p in s.split("+")[1:]} - set(self.free_baselines))
        if missing:
            raise ValueError(f"scores combine free baseline(s) {', '.join(missing)}, which free_baselines "
                             f"({', '.join(self.free_baselines) or 'none'}) does not compute")
        return self


class ExperimentConfig(Section):
    name: str = Field(..., min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    seed: int = 0
    dataset: DatasetConfig = Field(default_factory=DatasetConfig)
    embedding: EmbeddingConfig = Field(default_factory=EmbeddingConfig)
    selection: SelectionConfig = Field(default_factory=SelectionConfig)
    reference: ReferenceConfig = Field(default_factory=ReferenceConfig)
    space: Union[str, dict[str, Any]] = Field(
        "nb201", description="a built-in space name or YAML path, or {name: ..., <settings to override>}")
    search: SearchConfig = Field(default_factory=SearchConfig)
    final: TrainConfig = Field(default_factory=TrainConfig)
    detection: DetectionConfig = Field(default_factory=DetectionConfig)
    resources: ResourcesConfig = Field(default_factory=ResourcesConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    output: OutputConfig = Field(default_factory=OutputConfig)
    compression: Optional[CompressionConfig] = Field(None, description="settings of `frugalnas compression`")
    fidelity: Optional[FidelityConfig] = Field(None, description="settings of `frugalnas fidelity`")

    def space_spec(self) -> tuple[str, dict]:
        """(built-in name or YAML path, settings overriding that file's)."""
        if isinstance(self.space, str):
            return self.space, {}
        settings = dict(self.space)
        return settings.pop("name", "nb201"), settings


def apply_override(data: dict, assignment: str) -> None:
    """Apply ``key.path=value`` (the value parsed as YAML) to a nested dict in place."""
    key, sep, raw = assignment.partition("=")
    if not sep or not key:
        raise ConfigError(f"--set {assignment!r}: expected key.path=value")
    parts = key.split(".")
    node = data
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--set {assignment!r}: {part!r} is not a section")
        node = child
    node[parts[-1]] = yaml.safe_load(raw)


def parse_config(data: Any, source: str = "<config>", overrides: list[str] | tuple = ()) -> ExperimentConfig:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the experiment config must be a mapping of sections, got {type(data).__name__}")
    for assignment in overrides:
        apply_override(data, assignment)
    try:
        config = ExperimentConfig.model_validate(data)
    except ValidationError as error:
        raise ConfigError(f"{source}: invalid experiment config ({error.error_count()} problem(s))\n"
                          + describe(error, source, ExperimentConfig)) from None
    _check_references(config, source)
    _check_embedding(config, source)
    return config


def _check_embedding(config: ExperimentConfig, source: str) -> None:
    """The attention autoencoder trains on box masks: it needs a detection data set."""
    if config.embedding.kind != "attention":
        return
    from frugalnas.data.sources import SOURCES, parse_source_spec

    name, _ = parse_source_spec(config.dataset.source)
    task = config.dataset.task or (SOURCES.get(name).task if name in SOURCES else None)
    if task != "detection":
        raise ConfigError(f"{source}: embedding.kind: 'attention' trains on box masks and needs a detection data set, "
                          f"but dataset.source {config.dataset.source!r} is ingested for {task or 'an unknown task'}; "
                          "use a detection source (yolo:PATH, voc:PATH) or dataset.task: detection with a source "
                          "that has boxes (shapes), or embedding.kind plain or triplet")


GRADIENT_STRATEGIES = ("darts", "darts-2nd")  # DARTS first / second order, trained on Ray Train


def _check_references(config: ExperimentConfig, source: str) -> None:
    """Names that point into registries and files: the space (and its settings), the strategy."""
    from frugalnas.spaces import CellSpace, load_space
    from frugalnas.strategies import STRATEGIES

    name, overrides = config.space_spec()
    try:
        space = load_space(name, overrides or None)
    except ConfigError as error:
        raise ConfigError(f"{source}: space: {error}") from None
    try:
        space.check_buildable()  # a table-only space (categorical without a builder) cannot train
    except ConfigError as error:
        raise ConfigError(f"{source}: space {name!r}: {error}") from None
    strategy = config.search.strategy
    allowed = STRATEGIES.names() + list(GRADIENT_STRATEGIES)
    if strategy not in allowed:
        raise ConfigError(f"{source}: search.strategy: unknown strategy {strategy!r}; allowed: {', '.join(allowed)}")
    if strategy in GRADIENT_STRATEGIES and not isinstance(space, CellSpace):
        raise ConfigError(f"{source}: search.strategy {strategy!r} trains a supernet, which the {space.family!r} "
                          "space does not have; use a cell space (nb201, darts)")
    _check_task(config, space, source)
    if config.fidelity is not None and config.fidelity.reference_arm not in config.fidelity.arms:
        raise ConfigError(f"{source}: fidelity.reference_arm {config.fidelity.reference_arm!r} is not one of the arms "
                          f"({', '.join(config.fidelity.arms)})")
    allowed_params = _strategy_params(strategy)
    unknown = sorted(set(config.search.params) - set(allowed_params))
    if unknown:
        raise ConfigError(f"{source}: search.params: unknown setting(s) {', '.join(unknown)} for strategy "
                          f"{strategy!r}; allowed: {', '.join(allowed_params)}")
    if strategy not in GRADIENT_STRATEGIES:  # the values too: build the strategy once, as the search will
        from frugalnas.strategies import make_strategy

        try:
            make_strategy(strategy, space, **config.search.params)
        except ConfigError as error:
            raise ConfigError(f"{source}: search.params: {error}") from None


def _check_task(config: ExperimentConfig, space, source: str) -> None:
    """The space must build networks for the data set's task (known from dataset.task or the source's
    default), and detection-only settings must not meet a classification run or the reverse."""
    from frugalnas.data.sources import SOURCES, parse_source_spec

    source_name, _ = parse_source_spec(config.dataset.source)
    task = config.dataset.task or (SOURCES.get(source_name).task if source_name in SOURCES else None)
    if task is None:
        return
    if space.task != task:
        hint = ("set dataset.task: detection (the source must have boxes: shapes, yolo:PATH)" if space.task == "detection"
                else "use space: yolo")
        raise ConfigError(f"{source}: space: the {space.family!r} space builds {space.task} networks, but the data set "
                          f"is {task}: {hint}")
    if task == "detection":
        if config.selection.policy == "entropy":
            raise ConfigError(f"{source}: selection.policy: 'entropy' scores images by a classifier's prediction entropy, "
                              "which detection data has no counterpart for; use full, stream, random, dynamic-random "
                              "or dds")
        if "lr" in config.final.model_fields_set:
            raise ConfigError(f"{source}: final.lr: detection trains with ultralytics' optimizer settings; set the "
                              "learning rate as detection.train_args.lr0 (with detection.train_args.optimizer)")
        if ("objectives" in config.search.model_fields_set
                and "accuracy" in {o.lstrip("-") for o in config.search.objectives}):
            raise ConfigError(f"{source}: search.objectives: detection candidates report map50_95 and map50 (and "
                              "params, flops), not accuracy: e.g. [map50_95, -params]")
        if config.detection.train_args:
            from frugalnas.train.detect import check_train_args

            try:
                check_train_args(config.detection.train_args)
            except ConfigError as error:
                raise ConfigError(f"{source}: {error}") from None
    elif config.detection.model_fields_set:
        raise ConfigError(f"{source}: detection: settings for detection runs, but the data set is {task}; remove them")


#: Strategy parameters the search engine sets itself from other keys (seed, search.objectives, ...).
ENGINE_SET_PARAMS = ("seed", "objectives", "constraints", "metrics_fn", "order")


def _strategy_params(strategy: str) -> list[str]:
    """What ``search.params`` may hold for ``strategy``: its constructor's keywords (ask/tell
    strategies) or the DARTS settings, less what the engine sets itself."""
    if strategy in GRADIENT_STRATEGIES:
        from dataclasses import fields

        from frugalnas.train.darts import DartsSettings

        names = [f.name for f in fields(DartsSettings)]
    else:
        from frugalnas.strategies import STRATEGIES, strategy_parameters

        names = strategy_parameters(STRATEGIES.get(strategy))
    return [n for n in names if n not in ENGINE_SET_PARAMS]


def load_config(path: str | Path, overrides: list[str] | tuple = ()) -> ExperimentConfig:
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML: {error}") from None
    return parse_config(data, str(path), overrides)
