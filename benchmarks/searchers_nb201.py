"""Search strategies on the real NAS-Bench-201 table (NATS-Bench topology space, 15,625 cells, test
accuracy after 200 epochs on CIFAR-10, CIFAR-100 and ImageNet16-120), beside the published numbers.

    nice -n 10 .venv/bin/python benchmarks/searchers_nb201.py             # 20 seeds, budget 150 (~30 min on 2 cores)
    .venv/bin/python benchmarks/searchers_nb201.py --quick                # 3 seeds, budget 50, one column

Every strategy runs ``--seeds`` searches (seeds 0..N-1) of ``--budget`` evaluations per column; an
evaluation is a table lookup through ``frugalnas bench-searchers``'s engine. Beside the current
defaults, the defaults before the changes measured here run in the same process ("(before)" rows),
so the effect of each change is a side-by-side difference, not a comparison across runs.

The table is ../shared/data/nb201/nats_tss.csv (see its README); it is not committed. Without it the
script stops with a message. Results: benchmarks/results/searchers_nb201.{json,md} and one curve
plot per column.
"""
from __future__ import annotations

import argparse
import json
import os
from concurrent.futures import ProcessPoolExecutor
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, machine, reruns_text, write_results  # noqa: E402

from frugalnas.strategies.benchmark import plot_curves, run_searcher_benchmark  # noqa: E402

TABLE = Path(__file__).resolve().parents[2] / "shared" / "data" / "nb201" / "nats_tss.csv"
COLUMNS = {"CIFAR-10": "CIFAR10TestAccuracy200Epochs", "CIFAR-100": "CIFAR100TestAccuracy200Epochs",
           "ImageNet16-120": "ImageNetTestAccuracy200Epochs"}
STRATEGIES = ["random", "evolution", "rl", "predictor", "optuna-tpe", "optuna-nsga2"]
# The defaults before this benchmark's latest change (surrogate screening, ``screen``), run beside the current ones.
BEFORE = {name: {"screen": 1} for name in ("evolution", "rl", "optuna-tpe", "optuna-nsga2")}
BEFORE_CHANGE = ("surrogate screening: `screen: 1`; `searchers_nb201_early.md` reads what it changed at 25 and 50 "
                 "evaluations and at 100-150 here")
# NAS-Bench-201 (Dong & Yang, ICLR 2020): CIFAR-10 test accuracy (%), mean ± std over 500 runs under a
# simulated search-time budget, searching on validation accuracy (as given in ../shared/data/nb201/README.md;
# the other columns' published numbers are not quoted here).
PUBLISHED = {"CIFAR-10": {"optimum": 94.37, "REA": (93.92, 0.30), "REINFORCE": (93.85, 0.37), "RS": (93.70, 0.36)}}
GOAL_AT, GOAL = 50, 94.30  # best strategy on CIFAR-10 by 50 evaluations


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--table", default=str(TABLE))
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--budget", type=int, default=150)
    parser.add_argument("--strategies", default=",".join(STRATEGIES))
    parser.add_argument("--columns", default=",".join(COLUMNS), help="datasets to run, comma-separated")
    parser.add_argument("--no-before", action="store_true", help="skip the (before) rows")
    parser.add_argument("--quick", action="store_true", help="3 seeds, budget 50, CIFAR-10 only (a smoke run)")
    parser.add_argument("--jobs", type=int, default=1, help="strategies run in parallel processes (one core each)")
    parser.add_argument("--rerun", help="re-run only these rows (labels, comma-separated, e.g. 'rl') with the "
                        "current code on the recorded seeds and merge them into the committed results; the other "
                        "rows stay as measured")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if not Path(args.table).is_file():
        raise SystemExit(f"the NAS-Bench-201 table is not at {args.table}: pass --table (see ../shared/data/nb201)")
    if args.rerun:
        rerun(args)
        return
    if args.quick:
        args.seeds, args.budget, args.columns = 3, 50, "CIFAR-10"
    report_at = [b for b in (10, 25, 50, 100, 150) if b <= args.budget]
    strategies = args.strategies.split(",")
    load_before, started = os.getloadavg()[0], time.perf_counter()
    tasks = []
    for dataset in args.columns.split(","):
        runs = [(name, name, {}) for name in strategies]
        if not args.no_before:
            runs += [(f"{name} (before)", name, params) for name, params in BEFORE.items() if name in strategies]
        tasks += [(dataset, label, name, params) for label, name, params in runs]
    done = run_tasks(tasks, args.table, budget=args.budget, seeds=args.seeds, first_seed=0, report_at=report_at,
                     jobs=args.jobs, started=started)
    datasets = {}
    for dataset in args.columns.split(","):
        rows, result = {}, None
        for (d, label, name, params), r in zip(tasks, done):
            if d == dataset:
                rows[label] = {**r["strategies"][name], "params": params}
                result = result or r
        datasets[dataset] = {"result": {**result, "strategies": rows}}
    meta = {"when": date.today().isoformat(), "machine": machine(), "load_before": load_before,
            "load_after": os.getloadavg()[0], "total_seconds": time.perf_counter() - started,
            "command": " ".join(["benchmarks/searchers_nb201.py", *sys.argv[1:]]), "table": args.table}
    write("searchers_nb201" + ("_quick" if args.quick else ""), datasets, meta)


def write(name: str, datasets: dict, meta: dict) -> None:
    """The curve plot of each dataset, then the JSON and the Markdown."""
    for dataset, entry in datasets.items():
        result = entry["result"]
        png = RESULTS / f"{name}_{dataset.lower().replace('-', '')}.png"
        plot_curves({**result, "strategies": {k: v for k, v in result["strategies"].items() if "(before)" not in k}},
                    png, title=f"NAS-Bench-201 {dataset}: best test accuracy vs evaluations ({result['seeds']} seeds)")
        entry["png"] = png.name
    write_results(name, {"meta": meta, "datasets": datasets, "published": PUBLISHED, "before": BEFORE},
                  markdown(datasets, meta))


def rerun(args) -> None:
    """Re-run the rows named in ``args.rerun`` on the committed results' seeds and budget (after a change to
    those strategies), replace them and record the re-run in the meta data."""
    path = RESULTS / "searchers_nb201.json"
    payload = json.loads(path.read_text())
    meta, datasets = payload["meta"], payload["datasets"]
    labels = args.rerun.split(",")
    tasks, settings = [], {}
    for dataset, entry in datasets.items():
        result = entry["result"]
        settings = {"budget": result["budget"], "seeds": result["seeds"],
                    "report_at": result["strategies"]["random"]["budgets"]}
        for label in labels:
            if label not in result["strategies"]:
                raise SystemExit(f"--rerun: no row {label!r} in {path.name}; rows: {', '.join(result['strategies'])}")
            name = label.removesuffix(" (before)")
            tasks.append((dataset, label, name, result["strategies"][label].get("params", {})))
    started = time.perf_counter()
    done = run_tasks(tasks, args.table, budget=settings["budget"], seeds=settings["seeds"], first_seed=0,
                     report_at=settings["report_at"], jobs=args.jobs, started=started)
    for (dataset, label, name, params), r in zip(tasks, done):
        datasets[dataset]["result"]["strategies"][label] = {**r["strategies"][name], "params": params}
    meta.setdefault("reruns", []).append({"rows": labels, "when": date.today().isoformat(),
                                          "commit": machine().get("commit", "?"),
                                          "seconds": time.perf_counter() - started})
    write("searchers_nb201", datasets, meta)


def _run_task(table: str, dataset: str, name: str, params: dict, budget: int, seeds: int, first_seed: int,
              report_at: list[int]) -> dict:
    torch.set_num_threads(1)
    return run_searcher_benchmark(table, "nb201", arch_column="ArchitectureString", metric_column=COLUMNS[dataset],
                                  strategies=[name], budget=budget, seeds=seeds, first_seed=first_seed,
                                  budgets_report=report_at, strategy_params={name: params} if params else None)


def run_tasks(tasks: list[tuple[str, str, str, dict]], table: str, *, budget: int, seeds: int, first_seed: int,
              report_at: list[int], jobs: int, started: float) -> list[dict]:
    """run_searcher_benchmark for each (dataset, label, strategy, params), ``jobs`` at a time; results in order."""
    def args(task):
        dataset, _, name, params = task
        return table, dataset, name, params, budget, seeds, first_seed, report_at

    results: list[dict] = []
    if jobs <= 1:
        for task in tasks:
            results.append(_run_task(*args(task)))
            print(f"  {task[0]} {task[1]}: {time.perf_counter() - started:.0f}s so far", flush=True)
        return results
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        futures = [pool.submit(_run_task, *args(task)) for task in tasks]
        for task, future in zip(tasks, futures):
            results.append(future.result())
            print(f"  {task[0]} {task[1]}: {time.perf_counter() - started:.0f}s so far", flush=True)
    return results


def beyond(entry: dict, base: dict, k: int) -> tuple[float, float, float]:
    """(difference of means, that difference over the larger of the two seed stds, over the standard
    error of the difference) at report index k."""
    n = len(entry["final_best"])
    diff = entry["mean_best"][k] - base["mean_best"][k]
    spread = max(entry["std_best"][k], base["std_best"][k])
    se = ((entry["std_best"][k] ** 2 + base["std_best"][k] ** 2) / n) ** 0.5
    return diff, diff / spread if spread else float("inf"), diff / se if se else float("inf")


def markdown(datasets: dict, meta: dict) -> str:
    m = meta["machine"]
    first = next(iter(datasets.values()))["result"]
    seeds, budget = first["seeds"], first["budget"]
    lines = [
        "# Search strategies on the real NAS-Bench-201 table",
        "",
        f"Generated by `{meta['command']}` ({meta['when']}; {m.get('cpu', '?')}, {m['cpu_count']} cores shared with "
        f"other jobs: load average {meta['load_before']:.1f} before, {meta['load_after']:.1f} after; Python "
        f"{m['python']}, one torch thread; commit {m.get('commit', '?')}; {meta['total_seconds'] / 60:.0f} min in "
        f"all). Table: `nats_tss.csv` (all 15,625 NAS-Bench-201 cells, test accuracy after the 200-epoch schedule, "
        f"NATS-Bench). Each strategy ran {seeds} searches (seeds 0..{seeds - 1}) of {budget} evaluations (table "
        "lookups) per dataset, searching and reporting the same column. Cells: mean ± sample std over the seeds of "
        "the best test accuracy found after N evaluations. `(before)` rows: the same strategy with the defaults it "
        f"had before the latest change ({BEFORE_CHANGE}), in the same run. `optimum`: searches that found the "
        "column's best cell." + reruns_text(meta),
    ]
    for dataset, entry in datasets.items():
        result = entry["result"]
        rows = result["strategies"]
        budgets = next(iter(rows.values()))["budgets"]
        lines += ["", f"## {dataset}", "", f"Optimum {result['optimum']:.2f} (`{result['optimum_arch']}`).", "",
                  "| strategy | " + " | ".join(f"N={b}" for b in budgets) + " | optimum | s/search |",
                  "|---|" + "---:|" * (len(budgets) + 2)]
        for name, e in rows.items():
            cells = " | ".join(f"{mu:.2f} ± {sd:.2f}" for mu, sd in zip(e["mean_best"], e["std_best"]))
            lines.append(f"| {name} | {cells} | {e['found_optimum']}/{seeds} | {e['seconds_per_run']:.2f} |")
        published = PUBLISHED.get(dataset)
        if published:
            shown = ", ".join(f"{k} {v[0]:.2f} ± {v[1]:.2f}" for k, v in published.items() if k != "optimum")
            lines += ["", f"Published (NAS-Bench-201 paper; 500 runs, a simulated search-time budget instead of a "
                          f"fixed number of evaluations, searched on validation accuracy and reported on test): "
                          f"{shown}; optimum {published['optimum']:.2f}. Their protocol differs, so these are a "
                          "reference point, not a reproduction: here every strategy gets exactly N evaluations and "
                          "searches the test column itself (no validation-test gap, which makes every row here "
                          "optimistic by about that gap)."]
        lines += ["", f"![{dataset} curves]({entry['png']})", "",
                  "Above random search at each N: difference of means, in units of the larger seed std "
                  "(**bold**: beyond the seed spread, > 1), and in standard errors of the difference:", ""]
        base = rows.get("random")
        if base:
            for name, e in rows.items():
                if name == "random":
                    continue
                parts = []
                for k, b in enumerate(budgets):
                    diff, spread, se = beyond(e, base, k)
                    mark = f"**{spread:+.1f}**" if spread > 1 else f"{spread:+.1f}"
                    parts.append(f"N={b}: {diff:+.2f} ({mark} std, {se:+.1f} se)")
                lines.append(f"- {name}: " + "; ".join(parts))
    c10 = datasets.get("CIFAR-10")
    if c10:
        rows = {k: v for k, v in c10["result"]["strategies"].items() if "(before)" not in k}
        k = next(iter(rows.values()))["budgets"].index(GOAL_AT) if GOAL_AT in next(iter(rows.values()))["budgets"] else None
        if k is not None:
            best_name = max(rows, key=lambda n: rows[n]["mean_best"][k])
            value = rows[best_name]["mean_best"][k]
            lines += ["", "## Goals", "",
                      f"- Best strategy on CIFAR-10 at N={GOAL_AT}: {best_name} {value:.2f} "
                      f"({'reaches' if value >= GOAL else 'below'} the goal {GOAL:.2f})."]
            learning = [n for n in rows if n != "random"]
            for dataset, entry in datasets.items():
                drows = entry["result"]["strategies"]
                budgets = drows["random"]["budgets"]
                for n in learning:
                    short = [str(b) for i, b in enumerate(budgets) if b >= 25
                             and beyond(drows[n], drows["random"], i)[1] <= 1]
                    lines.append(f"- {dataset}, {n}: beyond random's seed spread at every N >= 25"
                                 if not short else f"- {dataset}, {n}: not beyond the seed spread at N = "
                                                   f"{', '.join(short)}")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
