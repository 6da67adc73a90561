"""A surrogate model of a strategy's first objective: an ensemble of small MLPs on ``space.encode(arch)``.

The ``predictor`` strategy proposes with it (BANANAS), and every other strategy can screen its own
proposals with it (``screen``, see :class:`~frugalnas.strategies.base.Strategy`).

The ensemble learns ``target``: ``rank`` (default) the normal scores of the results' ranks, or
``standardize`` the results themselves, standardised. Accuracy tables have a long tail of broken
architectures (NAS-Bench-201: disconnected cells at 10%, most cells between 85% and 94%); fitted on
raw accuracies, a squared-error model spends itself on that tail, and the differences among the good
architectures, which a search must rank, are left to noise. On ranks every result weighs the same.

The ensemble is re-trained from scratch once the number of results has grown by ``refit_growth``
(10%: after every result up to 20, then every 2, 3, ... results), with its initialisation seeded by
``seed`` and the number of results, so the model is a function of the told data: a restored strategy
re-trains the same weights instead of storing them (:attr:`model_size` is all the state there is).
All members train together as one batched network (a hundred or so full-batch steps of fused Adam),
about 0.05 s per refit on one CPU thread.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch

from frugalnas.spaces.base import Arch, Space
from frugalnas.strategies.base import check_float, check_int

TARGETS = ("rank", "standardize")


class MLPEnsemble:
    """``members`` independent 2-hidden-layer ReLU MLPs trained as one batched network."""

    def __init__(self, n_inputs: int, *, members: int, hidden: int, generator: torch.Generator):
        def layer(n_in: int, n_out: int) -> tuple[torch.Tensor, torch.Tensor]:
            bound = 1.0 / np.sqrt(n_in)  # torch.nn.Linear's default initialisation
            weight = (torch.rand(members, n_in, n_out, generator=generator) * 2 - 1) * bound
            bias = (torch.rand(members, 1, n_out, generator=generator) * 2 - 1) * bound
            return weight.requires_grad_(), bias.requires_grad_()

        self.layers = [layer(n_inputs, hidden), layer(hidden, hidden), layer(hidden, 1)]

    def parameters(self) -> list[torch.Tensor]:
        return [t for pair in self.layers for t in pair]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """(n, inputs) -> (members, n) predictions."""
        h = x.unsqueeze(0)
        for k, (weight, bias) in enumerate(self.layers):
            h = torch.baddbmm(bias, h.expand(weight.shape[0], -1, -1), weight)
            if k < len(self.layers) - 1:
                h = torch.relu(h)
        return h.squeeze(-1)

    def fit(self, x: torch.Tensor, y: torch.Tensor, *, steps: int, lr: float, weight_decay: float) -> float:
        """Full-batch Adam on the mean squared error of every member; returns the final mean loss."""
        optimizer = torch.optim.Adam(self.parameters(), lr=lr, weight_decay=weight_decay, fused=True)
        loss = torch.tensor(0.0)
        for _ in range(steps):
            optimizer.zero_grad(set_to_none=True)
            loss = ((self(x) - y) ** 2).mean(dim=1).sum()
            loss.backward()
            optimizer.step()
        return loss.item() / len(self.layers[0][0])


class Surrogate:
    """Predicts ``score(result)`` (larger is better) of unseen architectures from told ``(arch, result)`` pairs."""

    def __init__(self, space: Space, score: Callable[[dict], float], *, seed: int, members: int = 5, hidden: int = 32,
                 train_steps: int = 100, lr: float = 0.01, weight_decay: float = 0.0, refit_growth: float = 0.1,
                 target: str = "rank"):
        if target not in TARGETS:
            raise ValueError(f"target {target!r} is unknown; allowed: {', '.join(TARGETS)}")
        self.space, self.score, self.seed, self.target = space, score, seed, target
        self.members = check_int("members", members, minimum=2)
        self.hidden = check_int("hidden", hidden, minimum=1)
        self.train_steps = check_int("train_steps", train_steps, minimum=1)
        self.lr = check_float("lr", lr, 0.0, 10.0, low_open=True)
        self.weight_decay = check_float("weight_decay", weight_decay, 0.0)
        self.refit_growth = check_float("refit_growth", refit_growth, 0.0)
        self._model: MLPEnsemble | None = None
        self.model_size = 0  # how many results (a prefix of the history) the model was trained on
        self._target = (0.0, 1.0)  # mean and std used to standardise the targets
        self.last_fit_loss: float | None = None

    def restore(self, model_size: int) -> None:
        """Continue a saved run: the next prediction first re-trains the model it had (on that many results)."""
        self._model, self.model_size = None, int(model_size)

    def _fit(self, history: Sequence[tuple[Arch, dict]]) -> None:
        """Make sure the model is current: (re-)train when enough new results have arrived."""
        if self._model is None and self.model_size:  # restored: first rebuild the model the run had
            self._train(history, self.model_size)
        n = len(history)
        if self._model is None or n - self.model_size >= max(1, int(self.refit_growth * self.model_size)):
            self._train(history, n)

    def _train(self, history: Sequence[tuple[Arch, dict]], size: int) -> None:
        """Train a fresh ensemble on the first ``size`` told results."""
        told = dict(history[:size])  # an architecture told twice counts with its latest result
        x = torch.from_numpy(np.stack([self.space.encode(a) for a in told]).astype(np.float32))
        scores = np.array([self.score(r) for r in told.values()], dtype=np.float64)
        if self.target == "rank":  # normal scores of the ranks: a few very poor results cannot dominate the fit
            from scipy.stats import norm, rankdata

            scores = norm.ppf((rankdata(scores) - 0.5) / len(scores))
        mean, std = float(scores.mean()), float(scores.std()) or 1.0
        y = torch.from_numpy(((scores - mean) / std).astype(np.float32))
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + size)
        model = MLPEnsemble(x.shape[1], members=self.members, hidden=self.hidden, generator=generator)
        self.last_fit_loss = model.fit(x, y, steps=self.train_steps, lr=self.lr, weight_decay=self.weight_decay)
        self._model, self.model_size, self._target = model, size, (mean, std)

    def predict(self, history: Sequence[tuple[Arch, dict]], archs: list[Arch]) -> tuple[np.ndarray, np.ndarray]:
        """Ensemble mean and std of the score of ``archs``, from a model of ``history`` (told results, in order)."""
        self._fit(history)
        x = torch.from_numpy(np.stack([self.space.encode(a) for a in archs]).astype(np.float32))
        with torch.no_grad():
            out = self._model(x).double().numpy()
        mean, std = self._target
        return out.mean(axis=0) * std + mean, out.std(axis=0) * std
