"""Early budgets on the real NAS-Bench-201 table: is each learning strategy beyond random search's seed
spread after 25 evaluations, how sure is that with 20 seeds, and what would it take?

    nice -n 10 .venv/bin/python benchmarks/searchers_nb201_early.py --jobs 2    # ~30-40 min on 2 cores

`searchers_nb201.py` measures 20 searches per strategy (seeds 0..19). At 25 evaluations its verdict
"beyond the seed spread" (difference of means over the larger seed std > 1) sits close to 1 for most
strategies, and a ratio of means and stds from 20 seeds is itself noisy. This script runs many more
searches (default 100, on seeds 1000.. so that they are not the seeds the defaults were read from) of
50 evaluations and reports, per strategy and column, at N = 10 / 25 / 50:

* the mean and std of the best test accuracy found, and the ratio (difference from random over the
  larger std) with a 95% bootstrap interval over the searches (both sides resampled);
* how often 20 searches would call the strategy beyond the spread: the share of bootstrap draws of 20
  searches per side whose ratio is above 1;
* what the goal asks for in plain terms: random search's mean + std at N, the share of the table's
  architectures at or above it, and how many uniform random evaluations a strategy's mean best is
  worth ("random-equivalent evaluations", from the exact expected best of m draws of the table).

Each strategy that screens its proposals with a surrogate by default (``screen``, see
``frugalnas.strategies.base``) also runs unscreened (``screen: 1``, its behaviour before screening), in the
same run, so the change is a side-by-side difference.

Needs ../shared/data/nb201/nats_tss.csv (not committed). Results: benchmarks/results/searchers_nb201_early.{json,md};
a hand-written reading of them, ``results/searchers_nb201_early_reading.md``, is appended when present
(``--render`` re-writes the markdown from the JSON without running anything).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, machine, reruns_text, write_results  # noqa: E402
from searchers_nb201 import COLUMNS, TABLE, run_tasks  # noqa: E402

from frugalnas.spaces import load_space  # noqa: E402
from frugalnas.strategies.benchmark import read_table  # noqa: E402

# (label, strategy, parameters beside its defaults): each screening strategy beside itself unscreened
RUNS = [("random", "random", {}), ("predictor", "predictor", {})]
for _name in ("evolution", "rl", "optuna-tpe", "optuna-nsga2"):
    RUNS += [(_name, _name, {}), (f"{_name} unscreened", _name, {"screen": 1})]
REPORT_AT = (10, 25, 50)
READING = RESULTS / "searchers_nb201_early_reading.md"
RESULTS_JSON = RESULTS / "searchers_nb201_early.json"
SMALL_SAMPLE = 20  # the number of searches per strategy in searchers_nb201.py


def ratio(a: np.ndarray, b: np.ndarray) -> float:
    """Difference of means over the larger sample std (searchers_nb201's "beyond the seed spread" when > 1)."""
    spread = max(a.std(ddof=1), b.std(ddof=1))
    return float((a.mean() - b.mean()) / spread) if spread > 0 else float("inf")


def bootstrap(a: np.ndarray, b: np.ndarray, rng: np.random.Generator, draws: int, size: int | None = None) -> np.ndarray:
    """Ratios of ``draws`` resamples (``size`` searches per side, default all), both sides resampled."""
    na, nb = (size or len(a)), (size or len(b))
    return np.array([ratio(rng.choice(a, na), rng.choice(b, nb)) for _ in range(draws)])


def expected_best(sorted_values: np.ndarray, m: np.ndarray) -> np.ndarray:
    """Expected best of m uniform draws (with replacement) from the table, for each m."""
    n = len(sorted_values)
    cdf = np.arange(1, n + 1) / n
    below = np.arange(0, n) / n
    return np.array([float(np.sum(sorted_values * (cdf ** k - below ** k))) for k in m])


def random_equivalent(mean_best: float, ladder: np.ndarray, curve: np.ndarray) -> str:
    """The number of uniform random evaluations whose expected best equals ``mean_best``."""
    if mean_best <= curve[0]:
        return f"<= {ladder[0]}"
    if mean_best >= curve[-1]:
        return f"> {ladder[-1]:,}"
    k = int(np.searchsorted(curve, mean_best))
    return f"{ladder[k]:,}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--table", default=str(TABLE))
    parser.add_argument("--seeds", type=int, default=100, help="searches per strategy and column (default 100)")
    parser.add_argument("--first-seed", type=int, default=1000)
    parser.add_argument("--budget", type=int, default=50)
    parser.add_argument("--bootstrap", type=int, default=2000)
    parser.add_argument("--quick", action="store_true", help="5 seeds, CIFAR-10 only (a smoke run, not written)")
    parser.add_argument("--render", action="store_true", help="only re-write the markdown from the JSON")
    parser.add_argument("--jobs", type=int, default=1, help="searches run in parallel processes (one core each)")
    parser.add_argument("--rerun", help="re-run only these rows (labels, comma-separated, e.g. 'rl') with the "
                        "current code on the recorded seeds and merge them into the committed results; the other "
                        "rows stay as measured, and every interval is recomputed")
    args = parser.parse_args()
    if args.render:
        payload = json.loads(RESULTS_JSON.read_text())
        meta = payload["meta"]
        write_results("searchers_nb201_early", payload,
                      markdown(payload["datasets"], meta, [b for b in REPORT_AT if b <= meta["budget"]]))
        return
    torch.set_num_threads(1)
    if not Path(args.table).is_file():
        raise SystemExit(f"the NAS-Bench-201 table is not at {args.table}: pass --table (see ../shared/data/nb201)")
    if args.rerun:
        rerun(args)
        return
    columns = {"CIFAR-10": COLUMNS["CIFAR-10"]} if args.quick else COLUMNS
    if args.quick:
        args.seeds = 5
    report_at = [b for b in REPORT_AT if b <= args.budget]
    load_before, started = os.getloadavg()[0], time.perf_counter()
    tasks = [(dataset, label, name, params) for dataset in columns for label, name, params in RUNS]
    done = run_tasks(tasks, args.table, budget=args.budget, seeds=args.seeds, first_seed=args.first_seed,
                     report_at=report_at, jobs=args.jobs, started=started)
    datasets = {}
    for dataset, column in columns.items():
        rows = {label: row_of(name, params, r) for (d, label, name, params), r in zip(tasks, done) if d == dataset}
        datasets[dataset] = {"column": column, "rows": rows}
    add_statistics(datasets, args.table, report_at, args.bootstrap)
    meta = {"when": date.today().isoformat(), "machine": machine(), "load_before": load_before,
            "load_after": os.getloadavg()[0], "total_seconds": time.perf_counter() - started,
            "seeds": args.seeds, "first_seed": args.first_seed, "budget": args.budget, "bootstrap": args.bootstrap,
            "command": " ".join(["benchmarks/searchers_nb201_early.py", *sys.argv[1:]]), "table": args.table}
    text = markdown(datasets, meta, report_at)
    if args.quick:
        print(text)
        return
    write_results("searchers_nb201_early", {"meta": meta, "datasets": datasets}, text)


def row_of(name: str, params: dict, result: dict) -> dict:
    e = result["strategies"][name]
    return {"strategy": name, "params": params, "seed_best": e["seed_best"], "mean_best": e["mean_best"],
            "std_best": e["std_best"], "seconds_per_run": e["seconds_per_run"]}


def add_statistics(datasets: dict, table: str, report_at: list[int], draws: int) -> None:
    """Each row's ratio to random search with its intervals, its random-equivalent evaluations, and what the goal
    asks at each N, from the rows' per-search bests. Deterministic: the bootstrap generator is seeded once and
    consumed in row order, so a row whose searches did not change keeps its intervals."""
    rng = np.random.default_rng(0)
    space = load_space("nb201")
    for d in datasets.values():
        column = d["column"]
        values = np.sort([v[column] for v in read_table(table, space, arch_column="ArchitectureString",
                                                        metric_column=column).values.values()])
        ladder = np.unique(np.round(np.geomspace(1, 20000, 400)).astype(int))
        curve = expected_best(values, ladder)
        rows = d["rows"]
        base = np.array(rows["random"]["seed_best"])
        for label, row in rows.items():
            best = np.array(row["seed_best"])
            row["random_equivalent"] = [random_equivalent(m, ladder, curve) for m in row["mean_best"]]
            if label == "random":
                continue
            row["vs_random"] = []
            for k, n in enumerate(report_at):
                full = bootstrap(best[:, k], base[:, k], rng, draws)
                small = bootstrap(best[:, k], base[:, k], rng, draws, SMALL_SAMPLE)
                row["vs_random"].append({
                    "n": n, "difference": float(best[:, k].mean() - base[:, k].mean()),
                    "ratio": ratio(best[:, k], base[:, k]),
                    "ratio_ci": [float(np.quantile(full, 0.025)), float(np.quantile(full, 0.975))],
                    "share_beyond_with_20": float(np.mean(small > 1))})
        goal = []
        for k, n in enumerate(report_at):
            line = float(base[:, k].mean() + base[:, k].std(ddof=1))
            goal.append({"n": n, "random_mean_plus_std": line,
                         "table_share_at_or_above": float(np.mean(values >= line)),
                         "random_equivalent": random_equivalent(line, ladder, curve)})
        d["goal"], d["optimum"] = goal, float(values[-1])


def rerun(args) -> None:
    """Re-run the rows named in ``args.rerun`` on the committed results' seeds and budget (after a change to
    those strategies), replace them, recompute the statistics and record the re-run in the meta data."""
    payload = json.loads(RESULTS_JSON.read_text())
    meta, datasets = payload["meta"], payload["datasets"]
    labels = args.rerun.split(",")
    report_at = [b for b in REPORT_AT if b <= meta["budget"]]
    tasks = []
    for dataset, d in datasets.items():
        for label in labels:
            if label not in d["rows"]:
                raise SystemExit(f"--rerun: no row {label!r} in {RESULTS_JSON.name}; rows: {', '.join(d['rows'])}")
            row = d["rows"][label]
            tasks.append((dataset, label, row["strategy"], row["params"]))
    started = time.perf_counter()
    done = run_tasks(tasks, args.table, budget=meta["budget"], seeds=meta["seeds"], first_seed=meta["first_seed"],
                     report_at=report_at, jobs=args.jobs, started=started)
    for (dataset, label, name, params), r in zip(tasks, done):
        datasets[dataset]["rows"][label] = row_of(name, params, r)
    add_statistics(datasets, args.table, report_at, meta["bootstrap"])
    meta.setdefault("reruns", []).append({"rows": labels, "when": date.today().isoformat(),
                                          "commit": machine().get("commit", "?"),
                                          "seconds": time.perf_counter() - started})
    write_results("searchers_nb201_early", payload, markdown(datasets, meta, report_at))


def markdown(datasets: dict, meta: dict, report_at: list[int]) -> str:
    m = meta["machine"]
    lines = [
        "# Early budgets on the real NAS-Bench-201 table",
        "",
        f"Generated by `{meta['command']}` ({meta['when']}; {m.get('cpu', '?')}, {m['cpu_count']} cores shared with "
        f"other jobs: load average {meta['load_before']:.1f} before, {meta['load_after']:.1f} after; commit "
        f"{m.get('commit', '?')}; {meta['total_seconds'] / 60:.0f} min). {meta['seeds']} searches per strategy and "
        f"column (seeds {meta['first_seed']}..{meta['first_seed'] + meta['seeds'] - 1}, not the seeds 0..19 of "
        f"`searchers_nb201.py` nor 100..119 used to try settings), {meta['budget']} table lookups each, searching "
        "and reporting the same column." + reruns_text(meta),
        "",
        "Cells: mean ± std of the best test accuracy found after N evaluations; `ratio`: difference from random "
        "search over the larger std (`searchers_nb201.py` calls a strategy beyond the seed spread when it is "
        f"above 1) with its 95% bootstrap interval ({meta['bootstrap']} resamples of the searches, both sides); "
        f"`P(>1 | 20)`: the share of bootstrap draws of {SMALL_SAMPLE} searches per side in which the ratio is above 1, "
        "i.e. how often a 20-seed benchmark would say \"beyond the spread\"; `random-eq.`: how many uniform random "
        "evaluations have an expected best equal to the strategy's mean (exact, from the table's distribution).",
    ]
    for dataset, d in datasets.items():
        lines += ["", f"## {dataset}", "", f"Optimum {d['optimum']:.2f}.", "",
                  "| strategy | " + " | ".join(f"N={n}: mean ± std | ratio [95%] | P(>1 \\| 20) | random-eq."
                                                for n in report_at if n != report_at[0]) + " |",
                  "|---|" + "---:|---:|---:|---:|" * (len(report_at) - 1)]
        for label, row in d["rows"].items():
            cells = []
            for k, n in enumerate(report_at):
                if n == report_at[0]:
                    continue
                cell = f"{row['mean_best'][k]:.2f} ± {row['std_best'][k]:.2f}"
                if label == "random":
                    cells += [cell, "", "", row["random_equivalent"][k]]
                else:
                    v = row["vs_random"][k]
                    cells += [cell, f"{v['ratio']:+.2f} [{v['ratio_ci'][0]:+.2f}, {v['ratio_ci'][1]:+.2f}]",
                              f"{v['share_beyond_with_20']:.0%}", row["random_equivalent"][k]]
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        lines += ["", "What \"beyond the spread\" asks at each N: a mean best above random's mean + std, which is "
                  "the share of the table below at or above it, and worth this many random evaluations:", ""]
        lines += [f"- N={g['n']}: {g['random_mean_plus_std']:.2f}, top {100 * g['table_share_at_or_above']:.2f}% of "
                  f"the table, {g['random_equivalent']} random evaluations" for g in d["goal"]]
    if READING.exists():
        lines += ["", READING.read_text().strip()]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
