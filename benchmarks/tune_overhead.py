"""What going through Ray Tune costs per evaluation, against the in-process ask/tell loop.

    nice -n 10 .venv/bin/python benchmarks/tune_overhead.py            # ~30 min on the loaded 2 cores (~400 Tune trials)
    .venv/bin/python benchmarks/tune_overhead.py --quick               # smoke run, ~1 min

Part 1, side by side in one run: the same strategy (``evolution``, ``predictor``), seed and
synthetic NAS-Bench-201-like table (:mod:`frugalnas.strategies.synthetic`, seed 0) run through both
engines of :mod:`frugalnas.strategies.benchmark`: ``inprocess`` (ask, look up, tell in this process)
and ``tune`` (:mod:`frugalnas.runtime.tune_bench`: every evaluation is a Ray Tune trial, concurrency
1, through the same :class:`~frugalnas.runtime.tune_search.StrategySearcher` that ``frugalnas run``
uses). An evaluation is a table lookup (microseconds), so the in-process time is all strategy work
and the Tune time minus the in-process time is what Tune adds. Each (strategy, seed) runs at two
budgets (``--budgets``, default 10 and 30) in both engines, the engines interleaved so load changes
on the shared machine hit both alike; from the two budgets the Tune overhead is split into a fixed
per-search part (Tuner set-up and tear-down) and a marginal per-trial part (a straight line through
the two points). Every pair of runs is checked to give identical results: the same architectures
told to the strategy in the same order with the same values. One Tune search of 3 trials runs first
to start Ray's worker processes; its time is reported separately and left out of the averages.

Part 2: the wall time of a whole in-process strategy benchmark, all strategies, 20 seeds, budget
150 (``run_searcher_benchmark``, as ``benchmarks/searchers_nb201_like.py`` runs it), and what the
same number of evaluations would cost through Tune at the measured per-trial overhead (an
extrapolation, labelled as such).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from datetime import date
from functools import partial
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, write_results  # noqa: E402

from frugalnas.spaces import load_space  # noqa: E402
from frugalnas.strategies import make_strategy  # noqa: E402
from frugalnas.runtime.tune_bench import run_with_tune  # noqa: E402
from frugalnas.strategies.benchmark import ENGINES, read_table, run_searcher_benchmark  # noqa: E402
from frugalnas.strategies.synthetic import write_nb201_like_csv  # noqa: E402

COMPARED = ["evolution", "predictor"]
# tune: the platform's engine as it is; tune-reuse: the same with Tune's reuse_actors on (a proposed change)
ENGINES_COMPARED = ("inprocess", "tune", "tune-reuse")
# "tune": a fresh worker process per trial (Tune's default); "tune-reuse": reused workers (the platform's setting)
ENGINE_VARIANTS = {"tune": partial(run_with_tune, reuse_actors=False), "tune-reuse": partial(run_with_tune, reuse_actors=True)}
ALL_STRATEGIES = ["random", "evolution", "rl", "predictor", "optuna-tpe", "optuna-nsga2"]


def log(*parts) -> None:
    print(time.strftime("%H:%M:%S"), *parts, file=sys.stderr, flush=True)


def one_search(name: str, seed: int, engine: str, lookup, space, budget: int) -> dict:
    """One search: the results in evaluation order, the (architecture, table values) pairs told to the
    strategy in tell order, and the wall time. (Through Tune the strategy is also told Tune's own
    bookkeeping metrics, timestamp, pid, ...; those are left out of the comparison.)"""
    strategy = make_strategy(name, space, seed=seed, objectives=[lookup.metric])
    engine_fn = ENGINE_VARIANTS[engine] if engine in ENGINE_VARIANTS else ENGINES.get(engine)
    started = time.perf_counter()
    results = engine_fn(strategy, lookup, budget)
    seconds = time.perf_counter() - started
    told = [(str(a), {k: r[k] for k in lookup(a)}) for a, r in strategy.history]
    return {"seconds": seconds, "results": results, "told": told}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--strategies", default=",".join(COMPARED))
    parser.add_argument("--budgets", default="10,30", help="two search budgets (evaluations) per (strategy, seed)")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--bench-seeds", type=int, default=20)
    parser.add_argument("--bench-budget", type=int, default=150)
    parser.add_argument("--quick", action="store_true", help="budgets 3,6, 1 seed, whole benchmark 2 seeds x 20")
    parser.add_argument("--work", default=os.environ.get("FRUGALNAS_BENCH_WORK", "/tmp/frugalnas-bench"))
    args = parser.parse_args()
    if args.quick:
        args.budgets, args.seeds, args.bench_seeds, args.bench_budget = "3,6", 1, 2, 20
    small, large = sorted(int(b) for b in args.budgets.split(","))
    if not 1 <= small < large:
        raise SystemExit(f"--budgets needs two different positive budgets, got {args.budgets!r}")
    torch.set_num_threads(1)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray

    import frugalnas.runtime.tune_bench  # noqa: F401  (registers the tune engine)

    space = load_space("nb201")
    table = write_nb201_like_csv(Path(args.work) / "nb201_like_seed0.csv", seed=0)
    lookup = read_table(table, space, arch_column="arch", metric_column="accuracy")
    load_before = os.getloadavg()[0]
    started = time.perf_counter()

    ray_started = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    ray_init_seconds = time.perf_counter() - ray_started
    warm = one_search("random", 0, "tune", lookup, space, 3)
    log(f"ray.init {ray_init_seconds:.1f}s; first Tune search (3 trials) {warm['seconds']:.1f}s")

    runs, mismatches = [], []
    for name in args.strategies.split(","):
        for seed in range(args.seeds):
            for budget in (small, large):
                done = {engine: one_search(name, seed, engine, lookup, space, budget) for engine in ENGINES_COMPARED}
                base = done["inprocess"]
                run = {"strategy": name, "seed": seed, "budget": budget, "evaluations": len(base["results"]),
                       "best": max(r["accuracy"] for r in base["results"])}
                for engine, outcome in done.items():
                    run[f"{engine}_seconds"] = outcome["seconds"]
                    if engine != "inprocess":
                        same = (outcome["results"] == base["results"] and outcome["told"] == base["told"]
                                and len(outcome["told"]) == budget)
                        run[f"{engine}_identical"] = same
                        if not same:
                            mismatches.append(f"{name} seed {seed} budget {budget} ({engine})")
                runs.append(run)
                log(f"{name} seed {seed} budget {budget}: " + ", ".join(
                    f"{e} {run[e + '_seconds']:.2f}s" for e in ENGINES_COMPARED) + f"; mismatches so far {len(mismatches)}")
    ray.shutdown()

    summary = {}
    for name in args.strategies.split(","):
        mine = [r for r in runs if r["strategy"] == name]
        summary[name] = {}
        for engine in ENGINES_COMPARED[1:]:
            per = {}
            for budget in (small, large):
                at = [r for r in mine if r["budget"] == budget]
                inproc = float(np.mean([r["inprocess_seconds"] for r in at]))
                tuned = float(np.mean([r[f"{engine}_seconds"] for r in at]))
                per[budget] = {"inprocess_s": inproc, "tune_s": tuned, "inprocess_s_per_eval": inproc / budget,
                               "tune_s_per_eval": tuned / budget, "overhead_s_per_eval": (tuned - inproc) / budget}
            # a straight line through the two budgets: overhead = fixed + marginal * trials
            extra_small = per[small]["tune_s"] - per[small]["inprocess_s"]
            extra_large = per[large]["tune_s"] - per[large]["inprocess_s"]
            marginal = (extra_large - extra_small) / (large - small)
            summary[name][engine] = {"by_budget": per, "marginal_overhead_s_per_trial": marginal,
                                     "fixed_overhead_s_per_search": extra_small - marginal * small,
                                     "identical": all(r[f"{engine}_identical"] for r in mine)}
    per_eval = overhead_per_eval(summary, large)
    log(f"part 1 done in {time.perf_counter() - started:.0f}s; whole in-process benchmark next")

    bench_started = time.perf_counter()
    bench = run_searcher_benchmark(table, "nb201", strategies=ALL_STRATEGIES, budget=args.bench_budget,
                                   seeds=args.bench_seeds, budgets_report=[args.bench_budget])
    bench_seconds = time.perf_counter() - bench_started
    evaluations = sum(args.bench_seeds * args.bench_budget for _ in ALL_STRATEGIES)
    whole = {"strategies": ALL_STRATEGIES, "seeds": args.bench_seeds, "budget": args.bench_budget,
             "evaluations": evaluations, "wall_seconds": bench_seconds,
             "per_strategy_seconds": {k: v["wall_seconds"] for k, v in bench["strategies"].items()},
             "mean_best": {k: v["mean_best"][-1] for k, v in bench["strategies"].items()},
             "tune_extrapolated_extra_seconds": {e: evaluations * m for e, m in per_eval.items()}}
    meta = {"when": date.today().isoformat(), "machine": machine(), "load_before": load_before,
            "load_after": os.getloadavg()[0], "total_seconds": time.perf_counter() - started,
            "ray_version": ray.__version__, "ray_init_seconds": ray_init_seconds,
            "first_tune_search_seconds": warm["seconds"], "budgets": [small, large], "seeds": args.seeds,
            "command": " ".join(["benchmarks/tune_overhead.py", *sys.argv[1:]])}
    payload = {"meta": meta, "summary": summary, "runs": runs, "mismatches": mismatches, "whole_benchmark": whole}
    name = "tune_overhead_quick" if args.quick else "tune_overhead"
    write_results(name, payload, markdown(payload))
    if mismatches:
        raise SystemExit(f"the engines disagree on: {', '.join(mismatches)}")


def overhead_per_eval(summary: dict, budget: int) -> dict:
    """Per Tune engine: Tune's overhead per evaluation at ``budget``, averaged over the strategies."""
    engines = next(iter(summary.values())).keys()
    return {e: float(np.mean([s[e]["by_budget"][budget]["overhead_s_per_eval"] for s in summary.values()]))
            for e in engines}


def markdown(p: dict) -> str:
    meta, m, whole = p["meta"], p["meta"]["machine"], p["whole_benchmark"]
    small, large = meta["budgets"]
    lines = [
        "# Ray Tune overhead per evaluation, against the in-process loop",
        "",
        f"Generated by `{meta['command']}` ({meta['when']}; {m.get('cpu', '?')}, {m['cpu_count']} cores shared with "
        f"other jobs: load average {meta['load_before']:.1f} before, {meta['load_after']:.1f} after; Python "
        f"{m['python']}, Ray {meta['ray_version']} local, `num_cpus=2`, one torch thread; commit {m.get('commit', '?')}). "
        "Table: the synthetic NAS-Bench-201-like table (seed 0, 15,625 cells); an evaluation is a table lookup, so "
        "in-process time is strategy work only and Tune time minus in-process time is what Tune adds. Each "
        f"(strategy, seed) ran at budgets {small} and {large} in every engine, interleaved; {meta['seeds']} seeds, "
        "means below. `tune` = the platform's Tune engine (`frugalnas.runtime.tune_bench`: one trial per evaluation, "
        "concurrency 1, the `StrategySearcher` that `frugalnas run` uses) as it is, which leaves Tune's "
        "`reuse_actors` at its default False, so every trial starts a fresh worker process; `tune-reuse` = the same "
        "with `reuse_actors=True` (a proposed change, measured here only). "
        f"`ray.init` took {meta['ray_init_seconds']:.1f} s and a first Tune search (3 trials, starting Ray's "
        f"workers) {meta['first_tune_search_seconds']:.1f} s; neither is in the table." + (
            f" Note: {meta['note']}" if meta.get("note") else ""),
        "",
        "| strategy | engine | budget | in-process s | Tune s | in-process s/eval | Tune s/eval | Tune overhead s/eval | identical results |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for name, engines in p["summary"].items():
        for engine, s in engines.items():
            for budget, e in s["by_budget"].items():
                lines.append(f"| {name} | {engine} | {budget} | {e['inprocess_s']:.2f} | {e['tune_s']:.2f} | "
                             f"{e['inprocess_s_per_eval']:.4f} | {e['tune_s_per_eval']:.3f} | "
                             f"{e['overhead_s_per_eval']:.3f} | {'yes' if s['identical'] else 'NO'} |")
    per_eval = overhead_per_eval(p["summary"], large)
    lines += ["", f"**Tune's overhead per evaluation at budget {large}, mean of the strategies: "
              + ", ".join(f"{v:.2f} s ({k})" for k, v in per_eval.items()) + "**, against "
              f"{np.mean([s['tune']['by_budget'][large]['inprocess_s_per_eval'] for s in p['summary'].values()]):.4f} s "
              "of strategy work per evaluation in-process.", "",
              f"The same overhead split by a straight line through budgets {small} and {large} (overhead = fixed per "
              "search + marginal x trials). On this shared machine the load changed between the runs, so the split is "
              "noisy (a negative part means the two points are not on one line); the per-evaluation figure above is "
              "the robust one:", ""]
    for name, engines in p["summary"].items():
        for engine, s in engines.items():
            lines.append(f"- {name}, {engine}: {s['marginal_overhead_s_per_trial']:.2f} s per trial, "
                         f"{s['fixed_overhead_s_per_search']:.2f} s per search (Tuner set-up and tear-down)")
    verdict = ("Every engine gave identical results in every run: the same architectures, told to the strategy in "
               "the same order, with the same table values (through Tune the strategy is also told Tune's "
               "bookkeeping metrics such as `timestamp` and `pid`; those are not compared)." if not p["mismatches"]
               else f"The engines DISAGREED on: {', '.join(p['mismatches'])}.")
    extra = whole["tune_extrapolated_extra_seconds"]
    lines += ["", verdict, "",
              f"Whole in-process strategy benchmark ({', '.join(whole['strategies'])}; {whole['seeds']} seeds x "
              f"{whole['budget']} evaluations = {whole['evaluations']:,} evaluations, `run_searcher_benchmark`, "
              f"same run): **{whole['wall_seconds']:.0f} s** wall. Per strategy (s): "
              + ", ".join(f"{k} {v:.1f}" for k, v in whole["per_strategy_seconds"].items()) + ". "
              f"At the per-evaluation overheads above (budget {large}), the same evaluations through Tune would add about "
              + " and ".join(f"{v / 3600:.1f} h ({k})" for k, v in extra.items()) + " (an extrapolation, not measured)."]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
