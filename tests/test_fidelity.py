"""Ranking fidelity, the domain side: ground truth, stratified samples, rank statistics, synflow,
naswot, the summary (checked against scipy and by hand)."""
from __future__ import annotations

import csv
import math
import re

import numpy as np
import pytest
import torch
from scipy import stats as scipy_stats

from frugalnas.errors import DataError
from frugalnas.fidelity import (bootstrap_tau_interval, load_ground_truth, naswot, paired_tau_difference,
                                rank_fidelity, seed_agreement, stratified_sample, synflow)
from frugalnas.fidelity.proxy import loss_scores
from frugalnas.fidelity import report as report_module
from frugalnas.fidelity.report import build_summary, learning_curve_scores, rank_with_prior
from frugalnas.fidelity.truth import GroundTruth, parse_architectures
from frugalnas.spaces import load_space

SPACE = load_space("nb201", {"network": {"channels": 4, "cells_per_stage": 1}})


def write_table(path, rows, header=("arch", "acc")):
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def synthetic_truth(n=200, seed=0) -> GroundTruth:
    rng = np.random.default_rng(seed)
    archs = []
    while len(archs) < n:
        arch = SPACE.sample(rng)
        if arch not in archs:
            archs.append(arch)
    return GroundTruth({a: float(v) for a, v in zip(archs, rng.uniform(10, 95, n))}, "acc", "<synthetic>")


# ----------------------------------------------------------------------------- statistics

def test_rank_fidelity_matches_scipy_and_definitions():
    rng = np.random.default_rng(1)
    truth = rng.normal(size=20)
    proxy = truth + rng.normal(scale=0.8, size=20)
    stats = rank_fidelity(proxy, truth)
    assert stats["kendall_tau"] == pytest.approx(scipy_stats.kendalltau(proxy, truth).statistic)
    assert stats["spearman"] == pytest.approx(scipy_stats.spearmanr(proxy, truth).statistic)
    top_truth = set(np.argsort(-truth)[:5])
    top_proxy = set(np.argsort(-proxy)[:5])
    assert stats["top5_overlap"] == len(top_truth & top_proxy) / 5
    assert stats["regret_at_1"] == pytest.approx(truth.max() - truth[np.argmax(proxy)])


def test_perfect_reversed_and_constant_proxies():
    truth = np.arange(10.0)
    assert rank_fidelity(truth * 3 + 1, truth) == pytest.approx(
        {"kendall_tau": 1.0, "spearman": 1.0, "top5_overlap": 1.0, "regret_at_1": 0.0})
    assert rank_fidelity(-truth, truth) == pytest.approx(
        {"kendall_tau": -1.0, "spearman": -1.0, "top5_overlap": 0.0, "regret_at_1": 9.0})
    constant = rank_fidelity(np.ones(10), truth)
    assert constant["kendall_tau"] is None and constant["spearman"] is None  # no order at all


def test_statistics_refuse_misaligned_or_missing_scores():
    with pytest.raises(ValueError, match="aligned"):
        rank_fidelity([1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match="finite"):
        rank_fidelity([1, math.nan, 3], [1, 2, 3])


def test_resampled_taus_are_scipys_tau_b_ties_and_all():
    from frugalnas.fidelity.stats import resampled_taus

    rng = np.random.default_rng(5)
    truth = rng.integers(0, 6, size=15).astype(float)  # ties in the truth, and more from resampling
    proxy = truth + rng.integers(0, 3, size=15)
    resamples = rng.integers(0, 15, size=(300, 15))
    resamples[0] = 3  # one architecture fifteen times: no order at all
    expected = [scipy_stats.kendalltau(proxy[i], truth[i]).statistic for i in resamples]
    assert np.allclose(resampled_taus(proxy, truth, resamples), expected, equal_nan=True)
    assert np.isnan(resampled_taus(proxy, truth, resamples)[0])


def test_bootstrap_intervals():
    rng = np.random.default_rng(2)
    truth = rng.normal(size=25)
    proxy = truth + rng.normal(scale=0.5, size=25)
    low, high = bootstrap_tau_interval(proxy, truth, draws=500, seed=0)
    tau = scipy_stats.kendalltau(proxy, truth).statistic
    assert low < tau < high and high - low < 0.6
    assert bootstrap_tau_interval(proxy, truth, draws=500, seed=0) == (low, high)  # seeded
    # the same proxy twice: every paired resample differs by exactly zero
    assert paired_tau_difference(proxy, proxy, truth, draws=200) == (0.0, 0.0)
    # a clearly better proxy: the paired interval of the difference lies above zero
    worse = truth + rng.normal(scale=3.0, size=25)
    diff_low, _ = paired_tau_difference(truth + rng.normal(scale=0.05, size=25), worse, truth, draws=500)
    assert diff_low > 0


def test_seed_agreement_is_the_mean_tau_between_every_two_seeds():
    rng = np.random.default_rng(3)
    seeds = [rng.normal(size=12) for _ in range(3)]
    pairs = [(0, 1), (0, 2), (1, 2)]
    expected = np.mean([scipy_stats.kendalltau(seeds[a], seeds[b]).statistic for a, b in pairs])
    assert seed_agreement(seeds) == pytest.approx(expected)
    assert seed_agreement(seeds[:2]) == pytest.approx(scipy_stats.kendalltau(seeds[0], seeds[1]).statistic)
    assert seed_agreement([seeds[0], seeds[0]]) == pytest.approx(1.0)
    assert seed_agreement([seeds[0], -seeds[0]]) == pytest.approx(-1.0)
    # one seed, a seed not measured everywhere, a seed that gives no order: nothing to compare
    assert seed_agreement(seeds[:1]) is None
    assert seed_agreement([seeds[0], [None, *seeds[1][1:]]]) is None
    assert seed_agreement([seeds[0], np.ones(12)]) is None


# ----------------------------------------------------------------------------- ground truth and samples

def test_stratified_sample_is_seeded_in_range_and_spread_over_bins():
    truth = synthetic_truth()
    sample = stratified_sample(truth, 20, low=30, high=90, bins=4, seed=3)
    assert sample == stratified_sample(truth, 20, low=30, high=90, bins=4, seed=3)
    assert sample != stratified_sample(truth, 20, low=30, high=90, bins=4, seed=4)
    values = [truth(a) for a in sample]
    assert len(set(sample)) == 20 and all(30 <= v <= 90 for v in values)
    assert values == sorted(values)
    counts = np.histogram(values, bins=np.linspace(30, 90, 5))[0]
    assert counts.tolist() == [5, 5, 5, 5]


def test_stratified_sample_moves_the_shortfall_of_a_thin_bin():
    archs = [SPACE.sample(np.random.default_rng(i)) for i in range(400)]
    archs = list(dict.fromkeys(archs))[:60]
    values = {a: (99.0 if i < 2 else 10 + i % 30) for i, a in enumerate(archs)}  # the top bin holds 2
    sample = stratified_sample(GroundTruth(values, "acc", "t"), 12, bins=3, seed=0)
    assert len(sample) == 12 and sum(values[a] == 99.0 for a in sample) == 2


def test_stratified_sample_names_a_range_too_thin():
    with pytest.raises(DataError, match=r"k = 50, but only \d+ architectures .* in \[90, 95\]"):
        stratified_sample(synthetic_truth(), 50, low=90, high=95)


def test_ground_truth_table_errors_name_the_culprit(tmp_path):
    good = [str(SPACE.sample(np.random.default_rng(i))) for i in range(3)]
    table = write_table(tmp_path / "t.csv", [(a, 90 + i) for i, a in enumerate(good)])
    truth = load_ground_truth(table, SPACE, arch_column="arch", metric_column="acc")
    assert len(truth) == 3 and truth.optimum == 92
    with pytest.raises(DataError, match="no column.*'accuracy'.*arch, acc"):
        load_ground_truth(table, SPACE, arch_column="arch", metric_column="accuracy")
    bad = write_table(tmp_path / "bad.csv", [(good[0], 90), ("|conv_9x9~0|+|x|", 91)])
    with pytest.raises(DataError, match="line 3"):
        load_ground_truth(bad, SPACE, arch_column="arch", metric_column="acc")
    missing = str(next(a for a in (SPACE.sample(np.random.default_rng(i)) for i in range(10, 50))
                       if str(a) not in good))
    with pytest.raises(DataError, match="has no row for architecture " + re.escape(missing)):
        parse_architectures([good[0], missing], SPACE, truth)
    with pytest.raises(DataError, match=r"architectures\[1\] 'nonsense'"):
        parse_architectures([good[0], "nonsense"], SPACE, truth)
    with pytest.raises(DataError, match="listed twice"):
        parse_architectures([good[0], good[0]], SPACE, truth)


# ----------------------------------------------------------------------------- proxies

def test_synflow_ranks_a_cut_network_last_and_leaves_the_model_alone():
    torch.manual_seed(0)
    dead = SPACE.parse("|none~0|+|none~0|none~1|+|none~0|none~1|none~2|")
    alive = SPACE.parse("|nor_conv_3x3~0|+|nor_conv_3x3~0|skip_connect~1|+|skip_connect~0|nor_conv_3x3~1|none~2|")
    model = SPACE.build(alive, 10, 3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    score = synflow(model, 3, 16)
    assert math.isfinite(score)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert synflow(SPACE.build(dead, 10, 3), 3, 16) < score
    torch.manual_seed(0)
    assert synflow(SPACE.build(alive, 10, 3), 3, 16) == pytest.approx(score)


def test_naswot_is_the_log_determinant_of_the_relu_code_kernel():
    # by hand: one ReLU over 3 units; image codes (which inputs are > 0) are 110, 011, 111
    layer = torch.nn.Linear(2, 3, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]))
    model = torch.nn.Sequential(torch.nn.Flatten(), layer, torch.nn.ReLU())
    images = torch.tensor([[1.0, -2.0], [-2.0, 1.0], [1.0, 1.0]]).reshape(3, 1, 1, 2)
    codes = np.array([[1, 0, 0], [0, 1, 0], [1, 1, 1]], dtype=float)  # the 3rd unit: x + y > 0
    kernel = codes @ codes.T + (1 - codes) @ (1 - codes).T  # units on which two images agree
    assert naswot(model, images) == pytest.approx(np.linalg.slogdet(kernel)[1])
    # two identical images: their rows of the kernel are equal, so it is singular
    assert naswot(model, images[[0, 0, 1]]) == -math.inf


def test_naswot_scores_a_real_cell_without_touching_it():
    torch.manual_seed(0)
    images = torch.rand(16, 3, 16, 16)
    alive = SPACE.parse("|nor_conv_3x3~0|+|nor_conv_3x3~0|skip_connect~1|+|skip_connect~0|nor_conv_3x3~1|none~2|")
    dead = SPACE.parse("|none~0|+|none~0|none~1|+|none~0|none~1|none~2|")
    model = SPACE.build(alive, 10, 3).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}  # BatchNorm running statistics included
    score = naswot(model, images)
    assert math.isfinite(score) and not model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert naswot(model, images) == score  # deterministic
    assert naswot(SPACE.build(dead, 10, 3), images) == -math.inf  # every image gives the same (empty) code
    with pytest.raises(ValueError, match="at least 2 images"):
        naswot(model, images[:1])


def test_loss_scores_weight_batches_by_images():
    trace = [(100, 2.0), (200, 1.0), (250, 0.5), (400, 0.2)]
    scores = loss_scores(trace, 400)
    assert scores["tse"] == pytest.approx(-(2.0 * 100 + 1.0 * 100 + 0.5 * 50 + 0.2 * 150) / 400)
    assert scores["tse_last_quarter"] == pytest.approx(-0.2)  # only the batch ending past 300 images
    assert loss_scores(trace, 200)["tse"] == pytest.approx(-1.5)  # a checkpoint: only the batches so far


# ----------------------------------------------------------------------------- the summary

def test_summary_statistics_recompute_from_its_records():
    rng = np.random.default_rng(5)
    truth = rng.uniform(80, 94, 12)
    budgets = [100, 200, 400]
    stream = [[t + rng.normal(scale=s) for s in (6, 3, 1)] for t in truth]
    subset = [[t + rng.normal(scale=6) for _ in budgets] for t in truth]
    subset[0][2] = None  # one missing measurement: no statistics at that budget
    scores = {"accuracy": {"stream": stream, "random": subset},
              "tse": {"stream": [[-x for x in row] for row in stream], "random": subset}}
    images = {"stream": [100.0, 200.0, 400.0], "random": [100.0, 200.0, 400.0]}
    summary = build_summary(architectures=[f"a{i}" for i in range(12)], truth=truth,
                            free={"params": list(truth + rng.normal(scale=2, size=12))}, scores=scores, images=images,
                            seconds=images, budgets=budgets, reference_arm="stream", draws=300)
    stream_stats = summary["arms"]["stream"]
    for b in range(3):
        column = [row[b] for row in stream]
        assert stream_stats["kendall_tau"][b] == pytest.approx(scipy_stats.kendalltau(column, truth).statistic)
    assert summary["arms"]["random"]["kendall_tau"][2] is None
    assert summary["arms"]["random"]["tau_minus_stream_ci"][2] is None
    assert summary["arms"]["stream"]["tau_minus_stream_ci"] == [None, None, None]
    low, high = summary["arms"]["random"]["tau_minus_stream_ci"][1]
    assert low <= high
    assert summary["arms"]["stream"]["by_score"]["tse"]["kendall_tau"][0] == pytest.approx(
        -stream_stats["kendall_tau"][0])
    record = summary["architectures"][3]
    assert record["truth"] == truth[3] and record["scores"]["stream"] == stream[3]
    assert record["scores_by"]["tse"]["random"] == subset[3]
    params_tau = summary["baselines"]["params"]["kendall_tau"]
    beats = summary["arms"]["stream"]["beats"]["params"]["accuracy"]
    taus = stream_stats["kendall_tau"]
    expected = next((budgets[b] for b in range(3) if all(t > params_tau for t in taus[b:])), None)
    assert beats == expected
    # beating a free baseline beyond the noise: a paired interval per score, arm and budget
    params = [a["params"] for a in summary["architectures"]]
    against_params = stream_stats["by_score"]["accuracy"]["tau_minus_baseline_ci"]["params"]
    assert against_params[2] == pytest.approx(paired_tau_difference([row[2] for row in stream], params, truth, draws=300))
    assert against_params[2][0] <= taus[2] - params_tau <= against_params[2][1]
    assert summary["arms"]["random"]["by_score"]["accuracy"]["tau_minus_baseline_ci"]["params"][2] is None
    # an arm not measured at the largest budget (max_budget) is judged on the budgets it was measured at
    assert report_module._first_budget_beating([0.1, 0.6, None], 0.5, budgets) == 200
    assert report_module._first_budget_beating([0.6, 0.4, None], 0.5, budgets) is None
    assert report_module._first_budget_beating([None, None, None], 0.5, budgets) is None
    assert summary["best"]["overall"]["kendall_tau"] == max(
        t for arm in summary["arms"].values() for s in arm["by_score"].values() for t in s["kendall_tau"] if t is not None)


def test_rank_with_prior_averages_the_two_rankings():
    # a score that ranks small networks first and a prior that ranks them last cancel out
    assert rank_with_prior([0.3, 0.9, 0.5], [300, 100, 200]) == pytest.approx([2 / 3] * 3)
    # ties share their mean rank; the result is in (0, 1], higher better
    assert rank_with_prior([0.5, 0.5, 0.9, 0.1], [1, 2, 3, 4]) == pytest.approx([1.75 / 4, 2.25 / 4, 3.5 / 4, 2.5 / 4])
    # ranks need every architecture: one missing score leaves them all missing
    assert rank_with_prior([0.5, None, 0.7], [1, 2, 3]) == [None, None, None]
    # several priors: the mean of all the ranks
    assert rank_with_prior([0.1, 0.2, 0.3], [3, 2, 1], [10, 30, 20]) == pytest.approx(
        [(1 + 3 + 1) / 9, (2 + 2 + 3) / 9, (3 + 1 + 2) / 9])
    with pytest.raises(ValueError, match="at least one prior"):
        rank_with_prior([0.1, 0.2])


def test_accuracy_gain_is_measured_from_the_runs_first_budget():
    records = [{"budget": 200, "accuracy": 0.5}, {"budget": 100, "accuracy": 0.2}, {"budget": 400, "accuracy": 0.45}]
    scored = learning_curve_scores(records)
    assert [r["budget"] for r in scored] == [100, 200, 400]
    assert [r["accuracy_gain"] for r in scored] == [None, pytest.approx(0.3), pytest.approx(0.25)]
    assert "accuracy_gain" not in records[0]  # the trial's own records are left alone
    assert learning_curve_scores([]) == []


def test_config_accepts_exactly_the_scores_the_report_computes():
    # config.py stays free of the domain modules (and torch), so it keeps its own copy of the names
    from frugalnas.config import MEASURED_SCORES
    from frugalnas.fidelity.report import CURVE_SCORES, SCORES

    assert MEASURED_SCORES == SCORES + CURVE_SCORES
