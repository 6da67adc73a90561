"""Rank statistics of a proxy score against ground truth, with bootstrap intervals.

Every function takes aligned 1-D sequences (one entry per architecture, higher = better for both
the proxy and the truth). Kendall's tau is scipy's tau-b (ties in either ranking are allowed);
a proxy that gives every architecture the same score has no order, and its tau is ``None``.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from scipy import stats as scipy_stats


def _tau(proxy: np.ndarray, truth: np.ndarray) -> float:
    if np.ptp(proxy) == 0 or np.ptp(truth) == 0:
        return math.nan
    return float(scipy_stats.kendalltau(proxy, truth).statistic)


def _arrays(proxy: Sequence[float], truth: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    proxy, truth = np.asarray(proxy, dtype=np.float64), np.asarray(truth, dtype=np.float64)
    if proxy.shape != truth.shape or proxy.ndim != 1:
        raise ValueError(f"proxy {proxy.shape} and truth {truth.shape} must be 1-D and aligned")
    if len(proxy) < 2:
        raise ValueError(f"rank statistics need at least 2 architectures, got {len(proxy)}")
    if not (np.isfinite(proxy).all() and np.isfinite(truth).all()):
        raise ValueError("proxy and truth must be finite numbers (a failed evaluation has no score)")
    return proxy, truth


def _none_if_nan(value: float) -> float | None:
    return None if value is None or math.isnan(value) else float(value)


def top_k_overlap(proxy: Sequence[float], truth: Sequence[float], k: int = 5) -> float:
    """Share of the truth's top ``k`` that are also among the proxy's top ``k`` (ties broken by
    position, so the result is deterministic)."""
    proxy, truth = np.asarray(proxy, dtype=np.float64), np.asarray(truth, dtype=np.float64)
    k = min(k, len(proxy))
    best_proxy = set(np.argsort(-proxy, kind="stable")[:k].tolist())
    best_truth = set(np.argsort(-truth, kind="stable")[:k].tolist())
    return len(best_proxy & best_truth) / k


def regret_at_1(proxy: Sequence[float], truth: Sequence[float]) -> float:
    """Best truth among the architectures minus the truth of the proxy's best (0 = the proxy
    picks the best one). Ties in the proxy's best go to the first listed."""
    proxy, truth = np.asarray(proxy, dtype=np.float64), np.asarray(truth, dtype=np.float64)
    return float(truth.max() - truth[int(np.argmax(proxy))])


def rank_fidelity(proxy: Sequence[float], truth: Sequence[float], *, top: int = 5) -> dict:
    """``kendall_tau``, ``spearman``, ``top5_overlap`` (``top{k}_overlap``) and ``regret_at_1``."""
    proxy, truth = _arrays(proxy, truth)
    spearman = math.nan if np.ptp(proxy) == 0 else float(scipy_stats.spearmanr(proxy, truth).statistic)
    return {"kendall_tau": _none_if_nan(_tau(proxy, truth)), "spearman": _none_if_nan(spearman),
            f"top{top}_overlap": top_k_overlap(proxy, truth, top), "regret_at_1": regret_at_1(proxy, truth)}


def _resamples(n: int, draws: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, n, size=(draws, n))


PAIRS_PER_CHUNK = 4_000_000  # resamples x n x n sign entries held at once (about 32 MB of float64)


def resampled_taus(proxy: np.ndarray, truth: np.ndarray, resamples: np.ndarray) -> np.ndarray:
    """Kendall's tau-b of every resample (a row of indices), NaN where either side has no order.

    The same statistic as scipy's ``kendalltau`` (tested), but all resamples at once from the signs of
    every pairwise difference: a bootstrap of a few thousand resamples of tens of architectures, run for
    every arm, score, budget and baseline, costs seconds instead of many minutes."""
    n = resamples.shape[1]
    upper = np.triu(np.ones((n, n), dtype=bool), k=1)
    taus = np.empty(len(resamples))
    step = max(1, PAIRS_PER_CHUNK // (n * n))
    for start in range(0, len(resamples), step):
        rows = resamples[start:start + step]
        p, t = proxy[rows], truth[rows]
        sp = np.sign(p[:, :, None] - p[:, None, :])[:, upper]
        st = np.sign(t[:, :, None] - t[:, None, :])[:, upper]
        # tau-b = (concordant - discordant) / sqrt(pairs untied in proxy * pairs untied in truth)
        untied = np.count_nonzero(sp, axis=1) * np.count_nonzero(st, axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            taus[start:start + step] = np.where(untied > 0, (sp * st).sum(axis=1) / np.sqrt(untied), np.nan)
    return taus


def bootstrap_tau_interval(proxy: Sequence[float], truth: Sequence[float], *, draws: int = 2000,
                           level: float = 0.95, seed: int = 0) -> tuple[float, float] | None:
    """Percentile bootstrap interval of Kendall's tau, resampling architectures with replacement."""
    proxy, truth = _arrays(proxy, truth)
    return _percentiles(resampled_taus(proxy, truth, _resamples(len(proxy), draws, seed)), level)


def paired_tau_difference(proxy_a: Sequence[float], proxy_b: Sequence[float], truth: Sequence[float], *,
                          draws: int = 2000, level: float = 0.95, seed: int = 0) -> tuple[float, float] | None:
    """Paired bootstrap interval of tau(a) - tau(b): both proxies scored the same architectures, so
    each resample of architectures is used for both (the sampling spread of the architectures,
    about 0.08-0.10 at 20 of them, largely cancels in the difference)."""
    proxy_a, truth = _arrays(proxy_a, truth)
    proxy_b, _ = _arrays(proxy_b, truth)
    resamples = _resamples(len(truth), draws, seed)
    return _percentiles(resampled_taus(proxy_a, truth, resamples) - resampled_taus(proxy_b, truth, resamples), level)


def _percentiles(values: np.ndarray, level: float) -> tuple[float, float] | None:
    values = values[np.isfinite(values)]
    if len(values) == 0:
        return None
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)


def seed_agreement(per_seed: Sequence[Sequence[float | None]]) -> float | None:
    """Mean Kendall tau between every two seeds' scores of the same architectures: how repeatable the
    proxy's order is. Compared with its tau against the ground truth, it says what more seeds can
    buy: an order that seeds agree on but the truth does not is the proxy's bias, which averaging seeds
    keeps; one that changes from seed to seed is noise, which averaging reduces. None with fewer than
    two seeds measured everywhere, or when a seed gives every architecture the same score."""
    complete = [np.asarray(s, dtype=np.float64) for s in per_seed if None not in s]
    if len(complete) < 2 or len(complete) < len(per_seed):
        return None
    taus = [_tau(a, b) for i, a in enumerate(complete) for b in complete[i + 1:]]
    return None if any(math.isnan(t) for t in taus) else float(np.mean(taus))
