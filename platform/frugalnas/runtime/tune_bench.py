"""The ``tune`` engine of the tabular strategy benchmark: each evaluation is a Ray Tune trial.

The same strategy objects run through :class:`StrategySearcher`, one trial at a time, so a search
gives exactly the results the in-process engine gives for the same seed; the difference in wall
time is the per-trial overhead of going through Tune (see benchmarks/RESULTS.md).
"""
from __future__ import annotations

import tempfile

from ray import tune

from frugalnas.runtime.tune_search import StrategySearcher, fit_keeping_sigint
from frugalnas.strategies.benchmark import ENGINES, MissingArchitecture


def _look_up(config: dict, lookup, space) -> None:
    try:
        tune.report(lookup(space.parse(config["arch"])))
    except MissingArchitecture:  # no metric: the searcher tells the strategy it failed, as in-process
        tune.report({"missing_from_table": 1})


@ENGINES.register("tune")
def run_with_tune(strategy, lookup, budget: int, *, reuse_actors: bool = True) -> list[dict | None]:
    """One search as a Tune experiment (concurrency 1); results in evaluation order (None for an
    architecture missing from the table).

    ``reuse_actors=False`` (Tune's own default) starts a fresh worker process per trial: seconds
    per evaluation here, kept only so the benchmark can measure it."""
    import ray

    if not ray.is_initialized():
        ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False)
    searcher = StrategySearcher(strategy, strategy.space, budget=budget, metric=lookup.metric, mode="max")
    with tempfile.TemporaryDirectory(prefix="frugalnas-bench-tune-") as storage:
        tuner = tune.Tuner(
            tune.with_parameters(_look_up, lookup=lookup, space=strategy.space),
            tune_config=tune.TuneConfig(search_alg=tune.search.ConcurrencyLimiter(searcher, max_concurrent=1),
                                        num_samples=budget, reuse_actors=reuse_actors),
            run_config=tune.RunConfig(storage_path=storage, name="bench", verbose=0))
        results = fit_keeping_sigint(tuner)
        ordered = sorted(results, key=lambda r: r.config["suggestion"])
        return [None if lookup.metric not in r.metrics
                else {k: r.metrics[k] for k in lookup(strategy.space.parse(r.config["arch"]))} for r in ordered]
