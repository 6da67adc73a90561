"""The fidelity summary: per arm and budget, how well each proxy score ranks the architectures.

Input is plain data (what the trials measured), so the statistics can be recomputed from
``summary.json`` alone: its ``architectures`` list holds every architecture's ground truth, free
baseline values and proxy scores per arm and budget.
"""
from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np

from frugalnas.fidelity.stats import bootstrap_tau_interval, paired_tau_difference, rank_fidelity

#: Proxy scores recorded for every trained proxy at each budget (higher = better ranked).
SCORES = ("accuracy", "tse", "tse_last_quarter")
#: Scores computed from a trial's records along its run (see :func:`learning_curve_scores`).
CURVE_SCORES = ("accuracy_gain",)
STAT_KEYS = ("kendall_tau", "spearman", "top5_overlap", "regret_at_1")


def mean_over_seeds(values: Sequence[float | None]) -> float | None:
    """The mean of the seeds' values; None if any seed has no value (a failed or skipped run)."""
    if not values or any(v is None or not math.isfinite(v) for v in values):
        return None
    return float(np.mean(values))


def learning_curve_scores(records: Sequence[Mapping]) -> list[dict]:
    """The records of one run (ascending budgets) with ``accuracy_gain`` added: the accuracy at each
    budget minus the accuracy at the run's first budget (None there).

    A learning-curve score (Baker et al. 2018 predict final accuracy from such differences): early
    accuracy mostly says how fast a network starts, which in NAS spaces favours the small, shallow
    ones; what it gains after that favours the ones that are still improving. Only meaningful along
    one run (``checkpoints``), where every budget continues the same training."""
    records = sorted(records, key=lambda r: r["budget"])
    first = records[0]["accuracy"] if records else None
    return [{**r, "accuracy_gain": None if i == 0 or first is None or r.get("accuracy") is None
             else float(r["accuracy"]) - float(first)} for i, r in enumerate(records)]


def rank_with_prior(values: Sequence[float | None], *priors: Sequence[float]) -> list[float | None]:
    """Each architecture's mean rank by a measured score and by one or more free priors (parameter
    count, say), over the number of architectures: in (0, 1], higher is better, ties averaged.

    Short training favours networks that learn fast, which in NAS spaces are often the small ones, while
    a free prior like parameter count ranks the other way; each corrects the other's bias. Ranks need
    every architecture, so a missing score leaves all of them None."""
    from scipy.stats import rankdata

    if not priors:
        raise ValueError("rank_with_prior needs at least one prior")
    if any(v is None for v in values):
        return [None] * len(values)
    ranks = [rankdata(np.asarray(column, dtype=float)) for column in (values, *priors)]
    return [float(v) / len(values) for v in np.mean(ranks, axis=0)]


def _stats_at(proxy: Sequence[float | None], truth: Sequence[float], *, draws: int, seed: int) -> dict:
    if any(p is None for p in proxy):
        return {**{k: None for k in STAT_KEYS}, "tau_ci": None}
    return {**rank_fidelity(proxy, truth), "tau_ci": bootstrap_tau_interval(proxy, truth, draws=draws, seed=seed)}


def build_summary(*, architectures: Sequence[str], truth: Sequence[float], free: Mapping[str, Sequence[float]],
                  scores: Mapping[str, Mapping[str, Sequence[Sequence[float | None]]]],
                  images: Mapping[str, Sequence[float | None]], seconds: Mapping[str, Sequence[float | None]],
                  budgets: Sequence[int], reference_arm: str, primary: str = "accuracy", draws: int = 2000,
                  seed: int = 0) -> dict:
    """Statistics of every arm, score and budget, and of the free baselines.

    ``scores[score][arm][i][b]`` is architecture i's proxy score at budget b (already averaged over
    seeds; None when not measured); ``images[arm][b]`` and ``seconds[arm][b]`` the mean images
    processed and wall seconds per architecture. ``free[name][i]`` a free baseline's value.
    The reference arm's tau is subtracted from every arm's with a paired bootstrap interval.
    """
    truth = list(map(float, truth))
    arm_names = list(next(iter(scores.values())).keys())
    baselines = {name: _stats_at(list(values), truth, draws=draws, seed=seed) for name, values in free.items()}
    arms: dict[str, dict] = {}
    for arm in arm_names:
        by_score = {}
        for score, per_arm in scores.items():
            entry = {key: [] for key in (*STAT_KEYS, "tau_ci", "tau_minus_reference_ci")}
            entry["tau_minus_baseline_ci"] = {name: [] for name in free}  # beats a free baseline beyond the noise?
            for b in range(len(budgets)):
                proxy = [per_arm[arm][i][b] for i in range(len(truth))]
                stats = _stats_at(proxy, truth, draws=draws, seed=seed)
                for key in (*STAT_KEYS, "tau_ci"):
                    entry[key].append(stats[key])
                reference = [per_arm[reference_arm][i][b] for i in range(len(truth))]
                paired = None
                if arm != reference_arm and None not in proxy and None not in reference:
                    paired = paired_tau_difference(proxy, reference, truth, draws=draws, seed=seed)
                entry["tau_minus_reference_ci"].append(paired)
                for name, values in free.items():
                    entry["tau_minus_baseline_ci"][name].append(None if None in proxy else paired_tau_difference(
                        proxy, list(values), truth, draws=draws, seed=seed))
            by_score[score] = entry
        arms[arm] = {**by_score[primary], "images_processed": list(images[arm]), "wall_seconds": list(seconds[arm]),
                     "by_score": by_score}
        # the name for the paired difference against the plain stream of the data
        arms[arm]["tau_minus_stream_ci"] = arms[arm]["tau_minus_reference_ci"] if reference_arm == "stream" else None
    for arm, entry in arms.items():
        entry["beats"] = {name: {score: _first_budget_beating(entry["by_score"][score]["kendall_tau"],
                                                              baselines[name]["kendall_tau"], budgets)
                                 for score in scores} for name in baselines}
    best = _best_arm_score(arms, budgets)
    records = []
    for i, arch in enumerate(architectures):
        records.append({"arch": arch, "truth": truth[i], **{name: free[name][i] for name in free},
                        "scores": {arm: [scores[primary][arm][i][b] for b in range(len(budgets))] for arm in arm_names},
                        "scores_by": {score: {arm: [scores[score][arm][i][b] for b in range(len(budgets))]
                                              for arm in arm_names} for score in scores}})
    return {"budgets": list(budgets), "reference_arm": reference_arm, "primary_score": primary,
            "scores": list(scores), "arms": arms, "baselines": baselines, "best": best, "architectures": records}


def _first_budget_beating(taus: Sequence[float | None], baseline: float | None, budgets: Sequence[int]) -> int | None:
    """The smallest budget from which on the score's tau is above the baseline's at every budget it was
    measured at (an arm stopped early by ``max_budget`` has no tau at the larger budgets)."""
    if baseline is None:
        return None
    for b in range(len(budgets)):
        rest = [t for t in taus[b:] if t is not None]
        if taus[b] is not None and all(t > baseline for t in rest):
            return budgets[b]
    return None


def _best_arm_score(arms: Mapping[str, dict], budgets: Sequence[int]) -> dict | None:
    """The (arm, score, budget) with the highest tau, and per budget the best (arm, score)."""
    best, per_budget = None, []
    for b, budget in enumerate(budgets):
        top = None
        for arm, entry in arms.items():
            for score, stats in entry["by_score"].items():
                tau = stats["kendall_tau"][b]
                if tau is not None and (top is None or tau > top["kendall_tau"]):
                    top = {"arm": arm, "score": score, "budget": budget, "kendall_tau": tau}
        per_budget.append(top)
        if top and (best is None or top["kendall_tau"] > best["kendall_tau"]):
            best = top
    return {"overall": best, "per_budget": per_budget}
