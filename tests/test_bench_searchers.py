"""The tabular searcher benchmark on a synthetic NAS-Bench-201-like table: strategies that learn beat
random search, reading and lookup errors name the culprit, the result has the documented shape."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from frugalnas.errors import DataError
from frugalnas.registry import UnknownNameError
from frugalnas.spaces import load_space
from frugalnas.strategies.benchmark import best_so_far, plot_curves, read_table, run_searcher_benchmark
from frugalnas.strategies.synthetic import nb201_like_table, write_nb201_like_csv

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    return write_nb201_like_csv(tmp_path_factory.mktemp("nb201") / "nb201_like.csv", seed=0)


@pytest.fixture(scope="module")
def cheap(table):
    """random, evolution and rl: 10 seeds, 100 evaluations each (a fraction of a second per run)."""
    return run_searcher_benchmark(table, strategies=["random", "evolution", "rl"], budget=100, seeds=10,
                                  budgets_report=(10, 50, 100))


def _at(result, name, budget):
    """(mean, standard error) over seeds of the best value after ``budget`` evaluations."""
    entry = result["strategies"][name]
    k = entry["budgets"].index(budget)
    return entry["mean_best"][k], entry["std_best"][k] / np.sqrt(result["seeds"])


def test_synthetic_table_looks_like_nas_bench_201():
    values = np.array(list(nb201_like_table(seed=0).values()))
    assert len(values) == 5**6
    # about 2% of cells are disconnected (chance accuracy), the bulk lies between 85% and 93.5%,
    # and few cells come near the optimum
    assert 0.01 < (values < 15).mean() < 0.05
    assert 85 < np.median(values) < 92 < np.percentile(values, 90) < 93.5 < values.max() < 95
    assert (values > values.max() - 0.3).sum() < 20


def test_evolution_beats_random(cheap):
    for budget in (50, 100):
        evo, evo_se = _at(cheap, "evolution", budget)
        rnd, rnd_se = _at(cheap, "random", budget)
        # measured on seeds 0-9: +0.31 at 50, +0.70 at 100 (random search's std over seeds ~0.35)
        assert evo - rnd > 0.15, (budget, evo, rnd)
    evo, evo_se = _at(cheap, "evolution", 100)
    rnd, rnd_se = _at(cheap, "random", 100)
    assert evo - rnd > 2 * np.hypot(evo_se, rnd_se)


def test_rl_is_not_worse_than_random(cheap):
    for budget in (50, 100):
        rl, rl_se = _at(cheap, "rl", budget)
        rnd, rnd_se = _at(cheap, "random", budget)
        assert rl >= rnd - 2 * np.hypot(rl_se, rnd_se), (budget, rl, rnd)


def test_predictor_beats_random(table, cheap):
    result = run_searcher_benchmark(table, strategies=["predictor"], budget=50, seeds=5, budgets_report=(25, 50),
                                    strategy_params={"predictor": {"train_steps": 50}})  # lean: half the default
    pred, pred_se = _at(result, "predictor", 50)
    rnd, rnd_se = _at(cheap, "random", 50)
    # measured on seeds 0-4: within ~0.05 of the optimum by 50 evaluations, ~0.9 above random search
    assert pred - rnd > 0.4, (pred, rnd)
    assert pred - rnd > 2 * np.hypot(pred_se, rnd_se)


def test_result_shape_and_json(cheap, tmp_path):
    assert set(cheap) >= {"optimum", "optimum_arch", "strategies", "budget", "seeds", "n_archs", "engine"}
    assert cheap["n_archs"] == 15625 and cheap["engine"] == "inprocess"
    assert cheap["optimum"] == max(nb201_like_table(seed=0).values())
    for entry in cheap["strategies"].values():
        assert entry["budgets"] == [10, 50, 100]
        assert len(entry["mean_best"]) == len(entry["std_best"]) == 3
        assert len(entry["curve_mean"]) == 100 and len(entry["final_best"]) == 10
        assert np.all(np.diff(entry["curve_mean"]) >= -1e-9)  # best-so-far never decreases
        assert max(entry["final_best"]) <= cheap["optimum"]
        assert entry["wall_seconds"] > 0
    assert json.loads(json.dumps(cheap)) == cheap
    png = plot_curves(cheap, tmp_path / "curves.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_architectures_missing_from_the_table_are_counted_and_reported(tmp_path, table):
    partial = tmp_path / "partial.csv"
    with open(table) as source, open(partial, "w") as out:
        out.writelines(line for k, line in enumerate(source) if k < 200)
    result = run_searcher_benchmark(partial, strategies=["random", "evolution"], budget=30, seeds=2,
                                    budgets_report=(30,))
    assert result["n_archs"] == 199 and result["space_size"] == 15625 and result["missing_from_table"] == 15426
    lookup = read_table(partial, load_space("nb201"), arch_column="arch", metric_column="accuracy")
    for entry in result["strategies"].values():
        # nearly every proposal is missing (199 of 15,625 are there): each one is counted, none is looked up
        assert entry["missing_proposed"] > 40 and len(entry["missing_examples"]) == 5
        assert all(load_space("nb201").parse(a) not in lookup.values for a in entry["missing_examples"])
        assert entry["min_evaluations"] == 30  # a missing architecture spends its evaluation
    from click.testing import CliRunner

    from frugalnas.strategies.cli_bench import bench_searchers_command

    outcome = CliRunner().invoke(bench_searchers_command, ["--table", str(partial), "--strategies", "random",
                                                           "--budget", "10", "--seeds", "1", "--report-at", "10"])
    assert outcome.exit_code == 0, outcome.output
    assert "the table lacks 15,426 of the space's 15,625 architectures" in outcome.stderr
    assert "note: random proposed" in outcome.stderr


def test_table_errors_name_the_culprit(tmp_path, table):
    space = load_space("nb201")
    with pytest.raises(DataError, match=r"no column\(s\) 'valid_acc'; the columns are: arch, accuracy"):
        read_table(table, space, arch_column="arch", metric_column="valid_acc")
    bad = tmp_path / "bad.csv"
    rows = list(csv.reader(open(table)))[:5]
    rows[3][1] = "n/a"
    csv.writer(open(bad, "w", newline="")).writerows(rows)
    with pytest.raises(DataError, match=r"bad.csv line 4: column 'accuracy' is 'n/a', not a finite number"):
        read_table(bad, space, arch_column="arch", metric_column="accuracy")
    rows = list(csv.reader(open(table)))[:5]
    rows[2][0] = "|conv~0|"
    csv.writer(open(bad, "w", newline="")).writerows(rows)
    with pytest.raises(DataError, match=r"bad.csv line 3: column 'arch': bad nb201 architecture"):
        read_table(bad, space, arch_column="arch", metric_column="accuracy")
    rows = list(csv.reader(open(table)))[:5]
    rows[4][0] = rows[1][0]
    csv.writer(open(bad, "w", newline="")).writerows(rows)
    with pytest.raises(DataError, match="line 5: architecture .* is listed twice"):
        read_table(bad, space, arch_column="arch", metric_column="accuracy")
    with pytest.raises(UnknownNameError, match="unknown benchmark engine 'tune'; allowed: inprocess"):
        run_searcher_benchmark(table, strategies=["random"], engine="tune")
    with pytest.raises(UnknownNameError, match="unknown search strategy 'bananas'"):
        run_searcher_benchmark(table, strategies=["bananas"])


def test_report_column_and_best_so_far(tmp_path):
    results = [{"valid": 1.0, "test": 5.0}, {"valid": 3.0, "test": 2.0}, {"valid": 2.0, "test": 9.0}]
    # the report follows the best by the search metric, not the best report value
    assert best_so_far(results, "valid", "max", 4, "test").tolist() == [5.0, 2.0, 2.0, 2.0]
    assert best_so_far(results, "valid", "min", 3).tolist() == [1.0, 1.0, 1.0]
    path = tmp_path / "two.csv"
    test_acc = {arch: value - 0.5 + 0.01 * (k % 7) for k, (arch, value) in enumerate(nb201_like_table(seed=1).items())}
    valid_acc = nb201_like_table(seed=1)
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["arch_str", "valid_acc", "test_acc"])
        writer.writerows([arch, valid_acc[arch], test_acc[arch]] for arch in valid_acc)
    result = run_searcher_benchmark(path, arch_column="arch_str", metric_column="valid_acc", report_column="test_acc",
                                    strategies=["random"], budget=20, seeds=2, budgets_report=(10, 20))
    assert result["metric"] == "valid_acc" and result["report"] == "test_acc"
    best_valid = max(valid_acc, key=valid_acc.get)
    assert result["optimum_arch"] == best_valid and result["optimum"] == pytest.approx(test_acc[best_valid])
    assert result["optimum_report"] == pytest.approx(max(test_acc.values()))


def test_bench_searchers_command(table, tmp_path):
    from click.testing import CliRunner

    from frugalnas.strategies.cli_bench import bench_searchers_command

    runner = CliRunner()
    args = ["--table", str(table), "--strategies", "random,evolution", "--budget", "30", "--seeds", "3",
            "--report-at", "10,30", "--out", str(tmp_path / "r.json"), "--plot", str(tmp_path / "r.png")]
    outcome = runner.invoke(bench_searchers_command, args + ["--json"])
    assert outcome.exit_code == 0, outcome.output
    result = json.loads(outcome.stdout.strip().splitlines()[-1])
    assert result["strategies"]["evolution"]["budgets"] == [10, 30]
    assert json.loads((tmp_path / "r.json").read_text()) == result
    assert (tmp_path / "r.png").stat().st_size > 1000
    outcome = runner.invoke(bench_searchers_command, args)
    assert outcome.exit_code == 0 and "evolution" in outcome.stdout and "N=30" in outcome.stdout
    outcome = runner.invoke(bench_searchers_command, ["--table", str(table), "--metric-column", "acc"])
    assert outcome.exit_code == 2 and "no column(s) 'acc'; the columns are: arch, accuracy" in outcome.output


def test_bench_searchers_param_sets_a_strategy_setting(table):
    from click.testing import CliRunner

    from frugalnas.strategies.cli_bench import bench_searchers_command

    runner = CliRunner()
    args = ["--table", str(table), "--strategies", "random,evolution", "--budget", "12", "--seeds", "2",
            "--report-at", "12", "--json"]
    outcome = runner.invoke(bench_searchers_command, args + ["--param", "evolution.screen=1",
                                                             "--param", "evolution.population_size=4",
                                                             "--param", "evolution.sample_size=2"])
    assert outcome.exit_code == 0, outcome.output
    result = json.loads(outcome.stdout.strip().splitlines()[-1])
    assert result["strategies"]["evolution"]["params"] == {"screen": 1, "population_size": 4, "sample_size": 2}
    for bad, message in [("evolution.screen", "must read STRATEGY.KEY=VALUE"),
                         ("rl.screen=1", "'rl' is not among the strategies compared (random, evolution)"),
                         ("evolution.scren=1", "unknown parameter(s) scren; allowed:"),
                         ("evolution.screen=0", "search strategy 'evolution': screen must be an integer >= 1")]:
        outcome = runner.invoke(bench_searchers_command, args + ["--param", bad])
        assert outcome.exit_code == 2 and message in outcome.output, (bad, outcome.output)


@pytest.mark.slow
def test_tune_engine_gives_the_inprocess_results(table, ray_session):
    import frugalnas.runtime.tune_bench  # noqa: F401  (registers the engine)

    kwargs = dict(arch_column="arch", metric_column="accuracy", strategies=["evolution", "optuna-tpe"],
                  budget=6, seeds=1, budgets_report=(3, 6))
    inprocess = run_searcher_benchmark(table, engine="inprocess", **kwargs)
    import signal

    handler = signal.getsignal(signal.SIGINT)
    through_tune = run_searcher_benchmark(table, engine="tune", **kwargs)
    assert signal.getsignal(signal.SIGINT) is handler  # Tune's Ctrl+C handler does not outlive the search
    for name in kwargs["strategies"]:
        assert inprocess["strategies"][name]["curve_mean"] == through_tune["strategies"][name]["curve_mean"]
        assert inprocess["strategies"][name]["final_best"] == through_tune["strategies"][name]["final_best"]
