"""Accuracy intervals and the recovery formula, by a paired bootstrap.

Every test set of a study holds the same images (recoding keeps ids), so accuracies measured on
different test sets, or by different models on one test set, are paired: one bootstrap replicate
draws one resample of the test images and uses it for every accuracy. Differences (the drop from
the reference, the gain from retraining) then carry only the noise that is really there. When
several models were trained per configuration (``repeats``), each replicate also resamples the
models of each *group* (the models trained the same way), the same draw for every test set a group
is scored on, so the interval covers training-seed noise too.

Recovery (the standard reading of Poyser et al.'s "recovers up to 78.4%"; see the compression note)::

    recovery = (A_retrained@L - A_orig@L) / (A_orig@ref - A_orig@L)

the share of the drop at level L that retraining on L-compressed data closes. It is undefined
(``None``, "n/a") when the drop is within noise: when the drop's interval reaches zero.
"""
from __future__ import annotations

import numpy as np


def interval(replicates: np.ndarray, confidence: float) -> tuple[float, float]:
    """Percentile interval of bootstrap replicates."""
    tail = (1 - confidence) / 2
    low, high = np.quantile(np.asarray(replicates, dtype=np.float64), [tail, 1 - tail])
    return float(low), float(high)


class PairedBootstrap:
    """Bootstrap replicates of scores over a fixed set of ``n_images`` test images.

    Each replicate is one resample of the images, held in :attr:`counts` (how often each image is
    drawn). ``replicates(correct, group)`` takes a (models, images) 0/1 matrix (images in the same
    order for every call) and returns one accuracy per replicate: the mean over resampled models of
    each model's accuracy on the resampled images. A score that is not a mean over images (a
    detector's mAP) is computed per model on each resample by the caller and combined with
    :meth:`combine`."""

    def __init__(self, n_images: int, resamples: int = 1000, seed: int = 0):
        if n_images < 1:
            raise ValueError("a bootstrap needs at least one test image")
        self.n_images, self.resamples = n_images, resamples
        self._rng = np.random.default_rng(seed)
        self.counts = self._rng.multinomial(n_images, np.full(n_images, 1.0 / n_images), size=resamples).astype(np.int32)
        self._model_draws: dict[tuple[str, int], np.ndarray] = {}

    def combine(self, per_model: np.ndarray, group: str) -> np.ndarray:
        """(models, resamples) scores -> (resamples,): each replicate averages a resample of the
        models, the same draw for every call with the same ``group``."""
        per_model = np.atleast_2d(np.asarray(per_model, dtype=np.float64))
        models = per_model.shape[0]
        if models == 1:
            return per_model[0]
        key = (group, models)
        if key not in self._model_draws:
            self._model_draws[key] = self._rng.integers(0, models, size=(self.resamples, models))
        draws = self._model_draws[key]
        return per_model[draws, np.arange(self.resamples)[:, None]].mean(axis=1)

    def replicates(self, correct: np.ndarray, group: str) -> np.ndarray:
        correct = np.atleast_2d(np.asarray(correct, dtype=np.float32))
        if correct.shape[1] != self.n_images:
            raise ValueError(f"expected {self.n_images} images, got {correct.shape[1]}")
        return self.combine(correct @ (self.counts.T.astype(np.float32) / self.n_images), group)

    def accuracy(self, correct: np.ndarray, group: str, confidence: float) -> dict:
        """``{"accuracy", "accuracy_ci", "per_model"}`` of a (models, images) 0/1 matrix."""
        correct = np.atleast_2d(correct)
        return self.summarise(correct.mean(axis=1), self.replicates(correct, group), confidence)

    @staticmethod
    def summarise(per_model: np.ndarray, replicates: np.ndarray, confidence: float) -> dict:
        """The record of one score: its mean over models, interval, each model's score."""
        return {"accuracy": float(np.mean(per_model)), "accuracy_ci": list(interval(replicates, confidence)),
                "per_model": [float(a) for a in per_model], "_replicates": replicates}


def recovery_estimate(original_ref: dict, original_level: dict, retrained_level: dict, confidence: float) -> dict:
    """Recovery at one level from three accuracies of :meth:`PairedBootstrap.accuracy` (the reference
    model on reference and on level-L test data, the retrained model on level-L test data)."""
    drop = original_ref["accuracy"] - original_level["accuracy"]
    gain = retrained_level["accuracy"] - original_level["accuracy"]
    drop_reps = original_ref["_replicates"] - original_level["_replicates"]
    gain_reps = retrained_level["_replicates"] - original_level["_replicates"]
    drop_ci, gain_ci = interval(drop_reps, confidence), interval(gain_reps, confidence)
    result = {"drop_points": 100 * drop, "drop_points_ci": [100 * v for v in drop_ci],
              "recovered_points": 100 * gain, "recovered_points_ci": [100 * v for v in gain_ci],
              "within_noise": drop_ci[0] <= 0, "recovery": None, "recovery_ci": None}
    if result["within_noise"] or drop <= 0:
        result["within_noise"] = True
        result["note"] = (f"n/a: the drop ({100 * drop:.2f} points, {confidence:.0%} interval "
                          f"{100 * drop_ci[0]:.2f}..{100 * drop_ci[1]:.2f}) is within noise")
        return result
    usable = drop_reps > 0  # the few replicates without a drop have no recovery ratio
    ratios = gain_reps[usable] / drop_reps[usable]
    result["recovery"] = gain / drop
    result["recovery_ci"] = list(interval(ratios, confidence))
    return result
