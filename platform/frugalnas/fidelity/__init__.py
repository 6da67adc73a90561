"""Ranking fidelity: how well a cheap evaluation orders architectures like their ground truth.

A search only needs the *order* of its candidates to be right, so every frugal evaluation (a data
subset, a short budget, DDS) is judged by how much of the ground truth's order it keeps, at equal
training images, against free baselines that need no training (parameter count, FLOPs, synflow, naswot).

Plain Python/PyTorch (no Ray, no MLflow): ``runtime/fidelity.py`` runs the trials as Ray Tune trials
and ``track/`` records them.

* :mod:`.truth`: the ground-truth table and the architectures to measure (a list, or a seeded sample
  stratified by ground truth);
* :mod:`.stats`: Kendall tau, Spearman rho, top-k overlap, regret@1, bootstrap intervals, how well
  seeds agree;
* :mod:`.zero_cost`: free proxies (synflow, naswot);
* :mod:`.proxy`: one architecture trained with one selection arm, scored at each image budget;
* :mod:`.report`: the summary that every statistic can be recomputed from.
"""
from frugalnas.fidelity.stats import bootstrap_tau_interval, paired_tau_difference, rank_fidelity, seed_agreement
from frugalnas.fidelity.truth import GroundTruth, load_ground_truth, stratified_sample
from frugalnas.fidelity.zero_cost import naswot, synflow

__all__ = ["GroundTruth", "bootstrap_tau_interval", "load_ground_truth", "naswot", "paired_tau_difference",
           "rank_fidelity", "seed_agreement", "stratified_sample", "synflow"]
