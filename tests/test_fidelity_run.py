"""`frugalnas fidelity` end to end on the built-in digits with a synthetic ground-truth table, and the
ground-truth look-up of `frugalnas run` (slow ones train for real through Ray Tune)."""
from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import yaml
from click.testing import CliRunner
from scipy import stats as scipy_stats

from frugalnas.cli import cli
from frugalnas.spaces import load_space

NETWORK = {"channels": 4, "cells_per_stage": 1, "stages": 2}
SPACE = load_space("nb201", {"network": NETWORK})


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    """Every architecture of the space with a made-up ground truth (log parameters plus noise)."""
    import itertools

    path = tmp_path_factory.mktemp("table") / "truth.csv"
    rng = np.random.default_rng(0)
    ops = SPACE.choices()[0][1]
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["arch", "acc"])
        for combo in itertools.product(range(len(ops)), repeat=6):
            arch = SPACE.from_choices(combo)
            writer.writerow([str(arch), round(80 + 10 * rng.random() + combo.count(3), 3)])
    return path


def config(table, **fidelity) -> dict:
    return {
        "name": "fid",
        "seed": 0,
        "dataset": {"source": "digits", "codec": "png", "val_fraction": 0.15},
        "space": {"name": "nb201", "network": NETWORK},
        "fidelity": {"table": str(table), "arch_column": "arch", "metric_column": "acc",
                     "sample": {"k": 4, "bins": 2}, "budgets": [120, 240], "bootstrap": 200,
                     "train": {"batch_size": 32, "lr": 0.05},
                     "arms": {"stream": {"policy": "stream", "subset_size": None},
                              "random": {"policy": "random", "subset_size": 60}}, **fidelity},
        "resources": {"cpus_per_trial": 1, "max_concurrent_trials": 2},
        "tracking": {"enabled": False},
    }


def invoke(tmp_path, data, *extra, name="exp.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return CliRunner().invoke(cli, ["fidelity", str(path), "--out", str(tmp_path / "out"), *extra])


# ----------------------------------------------------------------------------- bad input: exit 2, before any work

def test_bad_tables_and_architecture_lists_exit_2_naming_the_culprit(tmp_path, table):
    arch = str(SPACE.sample(np.random.default_rng(0)))
    cases = [
        ({"metric_column": "accuracy"}, "no column(s) 'accuracy'"),
        ({"architectures": [arch, "|conv_7x7~0|+|none~0|none~1|"]}, "architectures[1] '|conv_7x7~0|"),
        ({"sample": {"k": 10, "min": 93.9}}, "fidelity.sample.k = 10, but only "),
    ]
    for settings, message in cases:
        result = invoke(tmp_path, config(table, **settings))
        assert result.exit_code == 2, result.output
        assert message in result.output, result.output
    result = invoke(tmp_path, config(tmp_path / "missing.csv"))
    assert result.exit_code == 2 and "missing.csv does not exist" in result.output
    short = tmp_path / "short.csv"
    short.write_text("arch,acc\n" + f"{arch},90\n")
    other = str(next(a for a in (SPACE.sample(np.random.default_rng(i)) for i in range(1, 50)) if str(a) != arch))
    result = invoke(tmp_path, config(short, architectures=[arch, other]))
    assert result.exit_code == 2 and f"has no row for architecture {other}" in result.output
    result = invoke(tmp_path, config(table, reference_arm="dds"))
    assert result.exit_code == 2 and "reference_arm 'dds' is not one of the arms (stream, random)" in result.output
    result = invoke(tmp_path, config(table, budgets=[240, 120]))
    assert result.exit_code == 2 and "ascending" in result.output
    assert not (tmp_path / "out" / "dataset").exists()  # nothing was ingested


# ----------------------------------------------------------------------------- end to end

@pytest.mark.parametrize("scores, free, message", [
    (["accuracy", "speed"], None,
     "unknown score 'speed'; allowed: accuracy, tse, tse_last_quarter, accuracy_gain, or one of them"),
    (["accuracy_gain+params"], None, "score accuracy_gain is the gain along one run: it needs checkpoints: true"),
    (["accuracy+depth"], None, "unknown score 'accuracy+depth'"),
    (["accuracy+synflow"], ["params"], "scores combine free baseline(s) synflow, which free_baselines (params)"),
    (["accuracy+params+naswot"], ["params"], "scores combine free baseline(s) naswot, which free_baselines (params)"),
    (["accuracy+params+params"], None, "unknown score 'accuracy+params+params'; allowed: accuracy, tse, "
     "tse_last_quarter, accuracy_gain, or one of them + one or more different free baselines"),
])
def test_bad_scores_exit_2_naming_them(tmp_path, table, scores, free, message):
    data = config(table, scores=scores)
    if free is not None:
        data["fidelity"]["free_baselines"] = free
    result = invoke(tmp_path, data)
    assert result.exit_code == 2 and message in result.output, result.output


def test_accuracy_gain_needs_two_budgets(tmp_path, table):
    result = invoke(tmp_path, config(table, checkpoints=True, budgets=[120], scores=["accuracy", "accuracy_gain"]))
    assert result.exit_code == 2 and "accuracy_gain is measured from the first budget on" in result.output


@pytest.mark.slow
def test_fidelity_measures_pairs_and_records_everything(tmp_path, table):
    data = config(table, checkpoints=True,
                  scores=["accuracy", "tse", "tse_last_quarter", "accuracy+params", "accuracy_gain",
                          "accuracy+params+naswot"])
    # the same policy and settings under another name (max_budget above every budget changes nothing but the
    # trial's key, so it really trains again): pairing must make it measure exactly what "random" measures
    data["fidelity"]["arms"]["random_twin"] = {"policy": "random", "subset_size": 60, "max_budget": 10_000}
    data["tracking"] = {"enabled": True}
    result = invoke(tmp_path, data, "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary == json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["budgets"] == [120, 240] and summary["k"] == 4 and not summary["failed_trials"]
    for arm in ("stream", "random", "random_twin"):
        entry = summary["arms"][arm]
        for key in ("kendall_tau", "spearman", "top5_overlap", "regret_at_1", "images_processed",
                    "tau_minus_stream_ci"):
            assert len(entry[key]) == 2, key
        assert entry["images_processed"] == [120, 240]  # budgets are exact, mid-epoch cuts included
    # pairing: the twin arm starts from the same weights and draws the same subset
    for record in summary["architectures"]:
        assert record["scores_by"]["accuracy"]["random"] == record["scores_by"]["accuracy"]["random_twin"]
        assert record["scores_by"]["tse"]["random"] == record["scores_by"]["tse"]["random_twin"]
    assert summary["arms"]["random_twin"]["tau_minus_stream_ci"] == summary["arms"]["random"]["tau_minus_stream_ci"]
    assert summary["arms"]["stream"]["tau_minus_stream_ci"] == [None, None]
    # every statistic recomputes from the records
    truth = [a["truth"] for a in summary["architectures"]]
    for arm in summary["arms"]:
        for score in ("accuracy", "tse", "tse_last_quarter"):
            for b in range(2):
                proxy = [a["scores_by"][score][arm][b] for a in summary["architectures"]]
                tau = summary["arms"][arm]["by_score"][score]["kendall_tau"][b]
                expected = scipy_stats.kendalltau(proxy, truth).statistic
                assert (tau is None and np.isnan(expected)) or tau == pytest.approx(expected)
    params = [a["params"] for a in summary["architectures"]]
    # accuracy+params: the mean of each architecture's ranks by accuracy and by parameter count, over k
    for arm in summary["arms"]:
        for b in range(2):
            accuracy = [a["scores_by"]["accuracy"][arm][b] for a in summary["architectures"]]
            ranks = (scipy_stats.rankdata(accuracy) + scipy_stats.rankdata(params)) / 2 / len(params)
            assert [a["scores_by"]["accuracy+params"][arm][b] for a in summary["architectures"]] == \
                pytest.approx(list(ranks))
            naswot = [a["naswot"] for a in summary["architectures"]]
            ranks = (scipy_stats.rankdata(accuracy) + scipy_stats.rankdata(params) + scipy_stats.rankdata(naswot)) / 3
            assert [a["scores_by"]["accuracy+params+naswot"][arm][b] for a in summary["architectures"]] == \
                pytest.approx(list(ranks / len(params)))
    # accuracy_gain: what the run gained after its first budget; none at the first budget
    for record in summary["architectures"]:
        for arm, gains in record["scores_by"]["accuracy_gain"].items():
            accuracy = record["scores_by"]["accuracy"][arm]
            assert gains[0] is None and gains[1] == pytest.approx(accuracy[1] - accuracy[0])
    assert summary["arms"]["stream"]["by_score"]["accuracy_gain"]["kendall_tau"][0] is None
    # one seed: nothing to say how repeatable the scores are (the measured ones; +params is no measurement)
    assert summary["seed_agreement"]["random"] == {score: [None, None] for score in
                                                   ("accuracy", "tse", "tse_last_quarter", "accuracy_gain")}
    assert params == [SPACE.count_params(SPACE.parse(a["arch"]), 10, 1) for a in summary["architectures"]]
    assert summary["baselines"]["params"]["kendall_tau"] == pytest.approx(
        scipy_stats.kendalltau(params, truth).statistic)
    assert set(summary["baselines"]) == {"params", "flops", "synflow", "naswot"}
    for plot in ("fidelity_curves.png", "proxy_vs_truth_accuracy.png", "proxy_vs_truth_tse.png",
                 "proxy_vs_truth_accuracy+params.png"):
        assert (tmp_path / "out" / plot).stat().st_size > 10_000
    # MLflow: a parent run and a nested run per trial, scores logged at step = budget
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'out' / 'mlflow' / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("fid").experiment_id])
    parents = [r for r in runs if r.data.tags["frugalnas.role"] == "experiment"]
    children = [r for r in runs if r.data.tags["frugalnas.role"] == "candidate"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED" and len(children) == 12
    assert all(c.info.status == "FINISHED" for c in children)
    history = client.get_metric_history(children[0].info.run_id, "accuracy")
    assert sorted(m.step for m in history) == [120, 240]
    assert "tau.accuracy.stream" in parents[0].data.metrics
    assert "tau.accuracy_with_params.stream" in parents[0].data.metrics  # MLflow names take no "+"


def test_free_baselines_do_not_depend_on_what_else_is_scored_and_rank_a_cut_network_last():
    import torch

    from frugalnas.runtime.fidelity import free_baselines

    images = torch.rand(8, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    archs = [SPACE.parse("|nor_conv_3x3~0|+|nor_conv_3x3~0|skip_connect~1|+|skip_connect~0|nor_conv_3x3~1|none~2|"),
             SPACE.parse("|avg_pool_3x3~0|+|nor_conv_1x1~0|none~1|+|skip_connect~0|nor_conv_1x1~1|nor_conv_3x3~2|"),
             SPACE.parse("|none~0|+|none~0|none~1|+|none~0|none~1|none~2|")]  # every path cut
    names = ["params", "synflow", "naswot"]
    forward = free_baselines(names, SPACE, archs, 10, 1, 8, images)
    backward = free_baselines(names, SPACE, archs[::-1], 10, 1, 8, images)
    # naswot initialises each network from the same seed, whatever was scored before it
    assert forward["naswot"][:2] == backward["naswot"][::-1][:2]
    for name in ("synflow", "naswot"):  # -inf for the cut network: kept last, as a finite number
        assert all(np.isfinite(forward[name])) and forward[name][2] < min(forward[name][:2]), name
    with pytest.raises(ValueError, match="naswot baseline needs a minibatch"):
        free_baselines(["naswot"], SPACE, archs, 10, 1, 8)


def test_seed_agreement_compares_the_seeds_of_each_arm_at_each_budget(table):
    """The summary's seed_agreement, from made-up records of two seeds: seed 1 orders the architectures
    as seed 0 does at the first budget and mostly the other way round at the second."""
    from frugalnas.config import parse_config
    from frugalnas.runtime.fidelity import summarise

    experiment = parse_config(config(table, seeds=[0, 1], checkpoints=True, scores=["accuracy", "accuracy_gain+params"]))
    archs = [SPACE.sample(np.random.default_rng(i)) for i in range(4)]
    accuracy = {0: [[0.1, 0.2, 0.3, 0.4], [0.5, 0.7, 0.6, 0.9]], 1: [[0.2, 0.3, 0.4, 0.5], [0.9, 0.8, 0.7, 0.6]]}
    measured = [({"arch": str(arch), "arm": arm, "seed": seed},
                 [{"budget": budget, "accuracy": accuracy[seed][b][i], "images_processed": budget, "seconds": 1.0}
                  for b, budget in enumerate((120, 240))], None)
                for i, arch in enumerate(archs) for arm in ("stream", "random") for seed in (0, 1)]
    summary = summarise(experiment, archs, lambda arch: float(archs.index(arch)),
                        {"params": [1, 2, 3, 4], "flops": [1, 2, 3, 4], "synflow": [1, 2, 3, 4]}, measured, {},
                        lambda message: None)
    gains = {seed: np.subtract(accuracy[seed][1], accuracy[seed][0]) for seed in (0, 1)}
    for arm in ("stream", "random"):
        agreement = summary["seed_agreement"][arm]
        assert set(agreement) == {"accuracy", "accuracy_gain"}  # the measured scores, not their +params ranks
        assert agreement["accuracy"] == pytest.approx(
            [1.0, scipy_stats.kendalltau(accuracy[0][1], accuracy[1][1]).statistic])  # -2/3
        assert agreement["accuracy_gain"][0] is None  # no gain at the first budget
        assert agreement["accuracy_gain"][1] == pytest.approx(scipy_stats.kendalltau(gains[0], gains[1]).statistic)


@pytest.mark.slow
def test_interrupted_measurement_resumes_and_added_arms_reuse_finished_trials(tmp_path, table):
    data = config(table)
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "frugalnas.cli", "fidelity", str(path), "--json"]
    straight = subprocess.run(command + ["--out", str(tmp_path / "straight")], capture_output=True, text=True,
                              env=env, timeout=600)
    assert straight.returncode == 0, straight.stderr[-3000:]

    run = subprocess.Popen(command + ["--out", str(tmp_path / "resumed")], stderr=subprocess.PIPE, text=True,
                           env=env, stdout=subprocess.DEVNULL)
    deadline, seen = time.time() + 600, []
    for line in run.stderr:
        seen.append(line)
        if "trial 2/8" in line or time.time() > deadline:
            break
    run.send_signal(signal.SIGINT)
    rest = run.communicate(timeout=300)[1]
    assert run.returncode == 2, "".join(seen) + rest
    assert "--resume" in rest and not (tmp_path / "resumed" / "summary.json").exists()
    again = subprocess.run(command + ["--out", str(tmp_path / "resumed")], capture_output=True, text=True, env=env,
                           timeout=600)
    assert again.returncode == 2 and "--resume" in again.stderr  # refuses to start over a measurement
    resumed = subprocess.run(command + ["--out", str(tmp_path / "resumed"), "--resume"], capture_output=True,
                             text=True, env=env, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    a = json.loads(straight.stdout.strip().splitlines()[-1])
    b = json.loads(resumed.stdout.strip().splitlines()[-1])
    assert a["architectures"] == b["architectures"]  # every score of every trial, hence every statistic
    for arm in a["arms"]:
        assert a["arms"][arm]["by_score"] == b["arms"][arm]["by_score"]

    # one arm more: the eight finished trials are reused, only the four new ones train
    data["fidelity"]["arms"]["random_small"] = {"policy": "random", "subset_size": 30}
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    extended = subprocess.run(command + ["--out", str(tmp_path / "resumed"), "--resume"], capture_output=True,
                              text=True, env=env, timeout=600)
    assert extended.returncode == 0, extended.stderr[-3000:]
    assert "8 already measured" in extended.stderr and "trial 4/4" in extended.stderr
    c = json.loads(extended.stdout.strip().splitlines()[-1])
    assert c["trials_reused"] == 8
    for old, new in zip(a["architectures"], c["architectures"]):
        assert old["scores_by"]["accuracy"]["stream"] == new["scores_by"]["accuracy"]["stream"]


# ----------------------------------------------------------------------------- run: ground truth of candidates

@pytest.mark.slow
def test_run_reports_each_candidates_ground_truth_and_the_regret(tmp_path, table):
    data = {"name": "gt", "seed": 0, "dataset": {"source": "digits", "codec": "png", "val_fraction": 0.15},
            "selection": {"policy": "random", "subset_size": 60},
            "space": {"name": "nb201", "network": NETWORK},
            "search": {"strategy": "random", "budget": 3, "epochs_per_candidate": 1,
                       "ground_truth": {"table": str(table), "arch_column": "arch", "metric_column": "acc"}},
            "final": {"epochs": 1}, "resources": {"cpus_per_trial": 1, "max_concurrent_trials": 2}}
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    result = CliRunner().invoke(cli, ["run", str(path), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    truth = {}
    with open(table) as handle:
        for row in csv.DictReader(handle):
            truth[row["arch"]] = float(row["acc"])
    assert all(t["ground_truth"] == truth[t["arch"]] for t in summary["trials"])
    gt = summary["ground_truth"]
    assert gt["optimum"] == max(truth.values())
    assert gt["regret"] == pytest.approx(gt["optimum"] - truth[summary["best_arch"]])
    assert gt["best_evaluated"] == max(t["ground_truth"] for t in summary["trials"])
    assert "regret" in result.output and "truth" in result.output  # the leaderboard shows it
    import mlflow

    client = mlflow.MlflowClient(summary["tracking"]["uri"])
    parent = client.get_run(summary["tracking"]["run_id"])
    assert parent.data.metrics["ground_truth_regret"] == pytest.approx(gt["regret"])
    children = client.search_runs([summary["tracking"]["experiment_id"]],
                                  filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert {c.data.tags["frugalnas.arch"]: c.data.metrics["ground_truth"] for c in children} == {
        t["arch"]: t["ground_truth"] for t in summary["trials"]}


def test_run_refuses_a_ground_truth_table_it_cannot_read(tmp_path):
    data = {"name": "gt", "search": {"ground_truth": {"table": str(tmp_path / "nope.csv")}},
            "tracking": {"enabled": False}}
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    result = CliRunner().invoke(cli, ["run", str(path), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2 and "search.ground_truth.table" in result.output and "does not exist" in result.output
