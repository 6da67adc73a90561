"""Tabular benchmark of search strategies: every evaluation is a table lookup, so a search of 150
architectures takes milliseconds to seconds and strategies can be compared over many seeds.

The table has one row per architecture: its canonical string (e.g. NAS-Bench-201's
``|nor_conv_3x3~0|+|...|``, or any string format a ``categorical`` space declares) and the metric
to maximise (or minimise, ``mode="min"``), optionally a second column to report (NAS-Bench-201's
protocol: search on validation accuracy, report the test accuracy of the architecture that is best
on validation). Tables are read from CSV, Parquet or JSON (:func:`read_table`)::

    result = run_searcher_benchmark("nb201_cifar10.csv", arch_column="arch", metric_column="valid_acc",
                                    report_column="test_acc", strategies=["random", "evolution"])
    plot_curves(result, "searchers.png")

A table need not cover the whole space (published benchmarks have failed or skipped trainings):
the architectures it lacks are counted, and a strategy that proposes one spends that evaluation
on nothing (as a failed training would) and is told it failed; each strategy's result lists how
many it proposed and which.

The per-seed search loop is an engine, registered in :data:`ENGINES` (``inprocess`` here); an
engine is ``engine(strategy, lookup, budget) -> list of result dicts (None for a missing
architecture)`` in evaluation order, so a Ray Tune engine can run the same strategies as Tune
trials and plug in unchanged.
"""
from __future__ import annotations

import csv
import json
import math
import numbers
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np

from frugalnas.errors import DataError
from frugalnas.registry import Registry
from frugalnas.spaces.base import Arch, Space
from frugalnas.strategies.base import STRATEGIES, Strategy, make_strategy

ENGINES: Registry[Callable[..., list]] = Registry("benchmark engine")
DEFAULT_REPORT_AT = (10, 25, 50, 100, 150)
TABLE_FORMATS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet", ".json": "json"}
MISSING_EXAMPLES = 5  # architectures missing from the table listed per strategy


class MissingArchitecture(DataError):
    """A strategy proposed an architecture of the space that the table has no row for."""


class TableLookup:
    """Architecture -> its row's metrics; plain data, so it pickles to remote workers.

    Calling it with an architecture the table lacks raises :class:`MissingArchitecture` naming it.
    """

    def __init__(self, values: dict[Arch, dict], *, metric: str, source: str = "<table>"):
        self.values, self.metric, self.source = values, metric, source

    def __call__(self, arch: Arch) -> dict:
        try:
            return dict(self.values[arch])
        except KeyError:
            raise MissingArchitecture(f"architecture {arch} is not in the table {self.source} "
                                      f"({len(self.values)} architectures)") from None

    def __len__(self) -> int:
        return len(self.values)


def _rows_csv(path: Path, columns: list[str]) -> Iterator[tuple[str, dict]]:
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        present = reader.fieldnames or []
        _check_columns(path, columns, present)
        for line, row in enumerate(reader, start=2):
            yield f"line {line}", row


def _rows_parquet(path: Path, columns: list[str]) -> Iterator[tuple[str, dict]]:
    import pyarrow.parquet as pq

    try:
        present = pq.read_schema(path).names
    except Exception as error:  # pyarrow raises several kinds for a file that is not Parquet
        raise DataError(f"{path}: not a readable Parquet file ({error})") from None
    _check_columns(path, columns, present)
    table = pq.read_table(path, columns=columns)
    for number, row in enumerate(table.to_pylist(), start=1):
        yield f"row {number}", row


def _rows_json(path: Path, columns: list[str], keyed: list[str]) -> Iterator[tuple[str, dict]]:
    """A list of records like CSV rows, or an object keyed by architecture string whose values are
    mappings of metrics (or the metric itself: a number or a list of numbers)."""
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DataError(f"{path}: not valid JSON ({error})") from None
    if isinstance(data, list):
        present = sorted({key for record in data if isinstance(record, Mapping) for key in record})
        _check_columns(path, columns, present)
        for number, record in enumerate(data):
            if not isinstance(record, Mapping):
                raise DataError(f"{path} record [{number}]: expected an object of columns, got {record!r:.80}")
            yield f"record [{number}]", record
    elif isinstance(data, Mapping):
        metric = keyed[0]
        for key, value in data.items():
            if not isinstance(value, Mapping):
                value = {metric: value}
            yield f"key {key!r}", {columns[0]: key, **value}
    else:
        raise DataError(f"{path}: a JSON table is a list of records or an object keyed by architecture string, "
                        f"got {type(data).__name__}")


def _check_columns(path: Path, wanted: list[str], present: Sequence[str]) -> None:
    missing = [c for c in wanted if c not in present]
    if missing:
        raise DataError(f"{path}: no column(s) {', '.join(map(repr, missing))}; the columns are: "
                        f"{', '.join(present) or 'none (empty file)'}")


def _number(value: Any) -> float:
    """A metric value: a number, numeric text, or a list of per-seed numbers (averaged); NaN if not."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                value = json.loads(text)
            except json.JSONDecodeError:
                return math.nan
        else:
            try:
                return float(text)
            except ValueError:
                return math.nan
    if isinstance(value, (list, tuple)):
        numbers_ = [_number(v) for v in value]
        return float(np.mean(numbers_)) if numbers_ else math.nan
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return float(value)
    return math.nan


def read_table(path: str | Path, space: Space, *, arch_column: str, metric_column: str,
               report_column: str | None = None) -> TableLookup:
    """Read a benchmark table into a :class:`TableLookup` (values are ``{metric: x[, report: y]}``).

    Formats by extension: ``.csv``; ``.parquet``/``.pq``; ``.json``, either a list of records or an
    object keyed by architecture string (then ``arch_column`` is not used) whose values hold the
    metrics. A metric is a number or a list of per-seed numbers, which is averaged (in CSV, a JSON
    list like ``[93.1, 93.4]``). Errors name the file and the culprit: a missing column (with the
    columns present), a row whose architecture does not parse or whose value is not a finite number
    (with its line, row, record or key), or an architecture listed twice.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"benchmark table {path} does not exist")
    kind = TABLE_FORMATS.get(path.suffix.lower())
    if kind is None:
        raise DataError(f"{path}: unknown table format {path.suffix or '(no extension)'!r}; allowed: "
                        f"{', '.join(TABLE_FORMATS)}")
    metrics = [metric_column] + ([report_column] if report_column else [])
    columns = [arch_column] + metrics
    if kind == "csv":
        rows = _rows_csv(path, columns)
    elif kind == "parquet":
        rows = _rows_parquet(path, columns)
    else:
        rows = _rows_json(path, columns, metrics)
    values: dict[Arch, dict] = {}
    first_seen: dict[Arch, str] = {}
    for where, row in rows:
        text = row.get(arch_column)
        try:
            arch = space.parse(text)
        except (ValueError, TypeError) as err:
            raise DataError(f"{path} {where}: column {arch_column!r}: {err}") from None
        entry = {}
        for column in metrics:
            if column not in row:
                raise DataError(f"{path} {where}: no {column!r}; it holds: {', '.join(map(str, row))}")
            value = _number(row[column])
            if not math.isfinite(value):
                raise DataError(f"{path} {where}: column {column!r} is {row[column]!r}, not a finite number "
                                "(or a list of numbers)")
            entry[column] = value
        if arch in values:
            raise DataError(f"{path} {where}: architecture {arch} is listed twice (first at {first_seen[arch]}); "
                            "give one row per architecture (average repeated runs first, or give them as a list)")
        values[arch] = entry
        first_seen[arch] = where
    if not values:
        raise DataError(f"{path}: the table has no rows")
    return TableLookup(values, metric=metric_column, source=str(path))


@ENGINES.register("inprocess")
def run_inprocess(strategy: Strategy, lookup: Callable[[Arch], dict], budget: int) -> list[dict | None]:
    """One search in this process: ``budget`` rounds of ask, look up, tell. Returns the looked-up
    results in evaluation order (fewer than ``budget`` if the strategy runs out of architectures);
    an architecture missing from the table gives None there and is told to the strategy as failed."""
    results: list[dict | None] = []
    for _ in range(budget):
        arch = strategy.ask()
        if arch is None:
            break
        try:
            result = lookup(arch)
        except MissingArchitecture:
            strategy.tell(arch, None)
            results.append(None)
            continue
        strategy.tell(arch, result)
        results.append(result)
    return results


def best_so_far(results: Sequence[Mapping[str, float] | None], metric: str, mode: str, budget: int,
                report: str | None = None) -> np.ndarray:
    """(budget,) curve: after each evaluation, the ``report`` value (default: the metric itself) of the
    best architecture by ``metric`` so far. A search that stopped early keeps its last value."""
    sign = 1.0 if mode == "max" else -1.0
    curve = np.empty(budget)
    best, shown = -math.inf, math.nan
    for k in range(budget):
        if k < len(results) and results[k] is not None:  # None: missing from the table, nothing learnt
            value = sign * results[k][metric]
            if value > best:
                best, shown = value, results[k][report or metric]
        curve[k] = shown
    return curve


def run_searcher_benchmark(table: str | Path, space: str | Space = "nb201", *, arch_column: str = "arch",
                           metric_column: str = "accuracy", strategies: Sequence[str] = ("random", "evolution"),
                           budget: int = 150, seeds: int = 20, first_seed: int = 0, engine: str = "inprocess",
                           budgets_report: Sequence[int] = DEFAULT_REPORT_AT, mode: str = "max",
                           report_column: str | None = None, strategy_params: Mapping[str, dict] | None = None,
                           progress: Callable[[str, int, float], None] | None = None) -> dict[str, Any]:
    """Run every strategy ``seeds`` times (seeds ``first_seed`` .. ``first_seed + seeds - 1``) for
    ``budget`` evaluations on the table.

    Returns ``{"optimum": x, "strategies": {name: {"budgets", "mean_best", "std_best", ...}}, ...}``:
    per strategy the mean and sample std over seeds of the best value found after each of
    ``budgets_report`` evaluations (``seed_best``: each seed's, one list per seed), the whole mean/std curve (``curve_mean``/``curve_std``, one value
    per evaluation), each seed's final best, wall time, and counters. With ``report_column`` the
    curves show that column's value of the architecture that is best by ``metric_column``, and
    ``optimum`` is the report value of the best architecture by the metric (``optimum_report``:
    the best report value in the table). ``strategy_params`` maps a strategy name to extra
    constructor parameters.
    """
    from frugalnas.spaces import load_space

    if isinstance(space, str):
        space = load_space(space)
    if mode not in ("max", "min"):
        raise ValueError(f"mode must be 'max' or 'min', got {mode!r}")
    budget = int(budget)
    if budget < 1 or int(seeds) < 1:
        raise ValueError(f"budget and seeds must be at least 1, got budget={budget}, seeds={seeds}")
    strategies = list(strategies)
    if not strategies:
        raise ValueError(f"no strategies to run; allowed: {', '.join(STRATEGIES.names())}")
    for name in strategies:
        STRATEGIES.get(name)  # unknown names fail before anything runs
    run = ENGINES.get(engine)
    strategy_params = dict(strategy_params or {})
    stray = sorted(set(strategy_params) - set(strategies))
    if stray:
        raise ValueError(f"strategy_params names strategies that are not run: {', '.join(stray)}")
    report_at = sorted({int(b) for b in budgets_report if 1 <= int(b) <= budget})

    lookup = read_table(table, space, arch_column=arch_column, metric_column=metric_column,
                        report_column=report_column)
    sign = 1.0 if mode == "max" else -1.0
    best_arch = max(lookup.values, key=lambda a: sign * lookup.values[a][metric_column])
    out: dict[str, Any] = {
        "table": str(table), "space": space.family, "n_archs": len(lookup), "space_size": space.size(),
        "missing_from_table": space.size() - len(lookup), "arch_column": arch_column,
        "metric": metric_column, "report": report_column or metric_column, "mode": mode,
        "optimum": lookup.values[best_arch][report_column or metric_column], "optimum_arch": str(best_arch),
        "budget": budget, "seeds": int(seeds), "first_seed": int(first_seed), "engine": engine, "strategies": {},
    }
    if report_column:
        out["optimum_report"] = max(sign * v[report_column] for v in lookup.values.values()) * sign
    objective = metric_column if mode == "max" else f"-{metric_column}"
    for name in strategies:
        curves, finals, counters, seconds = [], [], [], []
        for seed in range(int(first_seed), int(first_seed) + int(seeds)):
            strategy = make_strategy(name, space, seed=seed, objectives=[objective], **strategy_params.get(name, {}))
            started = time.perf_counter()
            results = run(strategy, lookup, budget)
            seconds.append(time.perf_counter() - started)
            curve = best_so_far(results, metric_column, mode, budget, report_column)
            curves.append(curve)
            finals.append(float(curve[-1]))
            counters.append({"evaluations": len(results), "reused": strategy.reused, "rejected": strategy.rejected,
                             "missing": [str(a) for a in strategy.infeasible if a not in lookup.values]})
            if progress:
                progress(name, seed, seconds[-1])
        curves = np.array(curves)
        mean = curves.mean(axis=0)
        std = curves.std(axis=0, ddof=1) if len(curves) > 1 else np.zeros(budget)
        out["strategies"][name] = {
            "budgets": report_at,
            "mean_best": [float(mean[b - 1]) for b in report_at],
            "std_best": [float(std[b - 1]) for b in report_at],
            "seed_best": [[float(curve[b - 1]) for b in report_at] for curve in curves],
            "curve_mean": mean.tolist(),
            "curve_std": std.tolist(),
            "final_best": finals,
            "found_optimum": sum(f == out["optimum"] for f in finals),
            "wall_seconds": float(sum(seconds)),
            "seconds_per_run": float(np.mean(seconds)),
            "mean_reused": float(np.mean([c["reused"] for c in counters])),
            "min_evaluations": min(c["evaluations"] for c in counters),
            "missing_proposed": sum(len(c["missing"]) for c in counters),
            "missing_examples": list(dict.fromkeys(a for c in counters for a in c["missing"]))[:MISSING_EXAMPLES],
            "params": dict(strategy_params.get(name, {})),
        }
    return out


def plot_curves(result: Mapping[str, Any], path: str | Path, *, title: str | None = None) -> Path:
    """PNG of each strategy's mean best value against evaluations, +-1 std bands, and the optimum."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(7.5, 4.8), dpi=120)
    x = np.arange(1, int(result["budget"]) + 1)
    lows = []
    for name, entry in result["strategies"].items():
        mean, std = np.asarray(entry["curve_mean"]), np.asarray(entry["curve_std"])
        line, = ax.plot(x, mean, label=name, linewidth=1.6)
        ax.fill_between(x, mean - std, mean + std, color=line.get_color(), alpha=0.15, linewidth=0)
        lows.append(np.nanmin((mean - std)[min(9, len(x) - 1):]))  # from evaluation 10 on: the start is random for all
    optimum = float(result["optimum"])
    ax.axhline(optimum, color="black", linestyle="--", linewidth=1, label=f"optimum {optimum:.2f}")
    if result.get("mode", "max") == "max" and lows:
        span = optimum - min(lows)
        ax.set_ylim(min(lows) - 0.05 * span, optimum + 0.1 * span)
    ax.set_xlabel("architectures evaluated")
    ax.set_ylabel(f"best {result.get('report', result['metric'])} so far (mean ± std over {result['seeds']} seeds)")
    ax.set_title(title or f"{result['space']} table {Path(str(result['table'])).name}: search strategies")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
