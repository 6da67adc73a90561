"""``frugalnas bench-searchers``: compare search strategies on a tabular benchmark (a CSV, Parquet or
JSON table of architectures and their accuracies). Attach with ``cli.add_command(bench_searchers_command)``."""
from __future__ import annotations

import json
from pathlib import Path

import click

from frugalnas.cli_support import emit_json, user_errors

ALL_STRATEGIES = "random,evolution,rl,predictor,optuna-tpe,optuna-nsga2"


def _int_list(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers, got {text!r}") from None


def _strategy_params(items: tuple[str, ...], names: list[str]) -> dict[str, dict]:
    """``--param STRATEGY.KEY=VALUE`` items as {strategy: {key: value}}; a strategy not being compared is refused."""
    import yaml

    out: dict[str, dict] = {}
    for item in items:
        target, eq, text = item.partition("=")
        name, dot, key = target.rpartition(".")
        if not eq or not dot or not name or not key:
            raise click.BadParameter(f"{item!r} must read STRATEGY.KEY=VALUE, e.g. evolution.screen=1",
                                     param_hint="--param")
        if name not in names:
            raise click.BadParameter(f"{item!r}: {name!r} is not among the strategies compared ({', '.join(names)})",
                                     param_hint="--param")
        out.setdefault(name, {})[key] = yaml.safe_load(text)
    return out


def _check_strategies(names: list[str], space: str, strategy_params: dict[str, dict]) -> None:
    """Build each strategy once, so a bad setting stops the command before any search, naming it."""
    from frugalnas.spaces import load_space
    from frugalnas.strategies import make_strategy

    built = load_space(space)
    for name in names:
        make_strategy(name, built, **strategy_params.get(name, {}))


@click.command("bench-searchers")
@click.option("--table", "table_path", required=True, type=click.Path(dir_okay=False),
              help="Table with one row per architecture: .csv, .parquet or .json (a list of records, or an object "
                   "keyed by architecture string whose values hold the metrics).")
@click.option("--space", default="nb201", show_default=True,
              help="Search space the architecture strings belong to: a built-in name or a space YAML file "
                   "(e.g. a categorical space).")
@click.option("--arch-column", default="arch", show_default=True,
              help="Column with the canonical architecture string (not used by a JSON object keyed by it).")
@click.option("--metric-column", default="accuracy", show_default=True, help="Column the strategies optimise.")
@click.option("--report-column", default=None,
              help="Column to report for the best architecture by the metric (e.g. test accuracy when searching "
                   "on validation accuracy) [default: the metric].")
@click.option("--mode", type=click.Choice(["max", "min"]), default="max", show_default=True)
@click.option("--strategies", default=ALL_STRATEGIES, show_default=True, help="Comma-separated strategy names.")
@click.option("--param", "params", multiple=True, metavar="STRATEGY.KEY=VALUE",
              help="A strategy setting beside its defaults (VALUE read as YAML), e.g. 'evolution.screen=1'; "
                   "repeatable.")
@click.option("--budget", type=int, default=150, show_default=True, help="Architectures evaluated per search.")
@click.option("--seeds", type=int, default=20, show_default=True, help="Searches per strategy (seeds 0..N-1).")
@click.option("--report-at", default="10,25,50,100,150", show_default=True,
              help="Budgets at which mean and std are reported.")
@click.option("--engine", type=click.Choice(["inprocess", "tune"]), default="inprocess", show_default=True,
              help="inprocess: ask/tell loops in this process (fast); tune: every evaluation a Ray Tune trial.")
@click.option("--out", type=click.Path(dir_okay=False), default=None, help="Write the full result to this JSON file.")
@click.option("--plot", type=click.Path(dir_okay=False), default=None, help="Write the curves to this PNG file.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON on the last line.")
@user_errors
def bench_searchers_command(table_path, space, arch_column, metric_column, report_column, mode, strategies, params,
                            budget, seeds, report_at, engine, out, plot, as_json):
    """Compare search strategies on a tabular benchmark: mean +- std over seeds of the best value
    found after each number of evaluations, and the wall time of each strategy."""
    from frugalnas.strategies.benchmark import plot_curves, run_searcher_benchmark

    if engine == "tune":
        import frugalnas.runtime.tune_bench  # noqa: F401  (registers the tune engine; imports Ray)

    names = [name.strip() for name in strategies.split(",") if name.strip()]
    strategy_params = _strategy_params(params, names)
    _check_strategies(names, space, strategy_params)

    def progress(name, seed, seconds):
        if seed + 1 == seeds:
            click.echo(f"  {name}: {seeds} searches done", err=True)

    result = run_searcher_benchmark(table_path, space, arch_column=arch_column, metric_column=metric_column,
                                    strategies=names, budget=budget, seeds=seeds, engine=engine,
                                    budgets_report=_int_list(report_at), mode=mode, report_column=report_column,
                                    progress=progress, strategy_params=strategy_params)
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(result, indent=2) + "\n")
    if plot:
        plot_curves(result, plot)
    if result["missing_from_table"]:
        click.echo(f"note: the table lacks {result['missing_from_table']:,} of the space's {result['space_size']:,} "
                   "architectures; a strategy that proposes one spends the evaluation on nothing", err=True)
    for name, entry in result["strategies"].items():
        if entry["missing_proposed"]:
            click.echo(f"note: {name} proposed {entry['missing_proposed']} architecture(s) missing from the table "
                       f"over {seeds} searches, e.g. {', '.join(entry['missing_examples'][:3])}", err=True)
    if as_json:
        emit_json(result)
        return
    budgets = result["strategies"][names[0]]["budgets"]
    click.echo(f"{result['n_archs']} architectures in {table_path}; optimum {result['optimum']:.4f}; "
               f"{seeds} seeds, mean +- std of the best {result['report']} after N evaluations")
    click.echo(f"{'strategy':14s}" + "".join(f"{'N=' + str(b):>17s}" for b in budgets) + f"{'seconds':>9s}")
    for name, entry in result["strategies"].items():
        cells = "".join(f"{m:10.4f} +-{s:5.2f}" for m, s in zip(entry["mean_best"], entry["std_best"]))
        click.echo(f"{name:14s}{cells}{entry['wall_seconds']:9.1f}")
    if out:
        click.echo(f"result written to {Path(out).resolve()}")
    if plot:
        click.echo(f"curves written to {Path(plot).resolve()}")
