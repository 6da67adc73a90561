"""Predictor-guided search in the manner of BANANAS (White et al., AAAI 2021).

An ensemble of small MLPs learns to predict the first objective from ``space.encode(arch)``; its
spread across members is the uncertainty. The first ``n_initial`` proposals are random. Then, for
every proposal: candidates are made by mutating the ``top_k`` best evaluated architectures (one or
two mutations each) plus a few random ones, those already evaluated, pending or infeasible are
dropped, and the candidate with the best acquisition value is proposed:

* ``its`` (default, BANANAS' choice): independent Thompson sampling, a draw from
  N(ensemble mean, ensemble std) per candidate;
* ``ucb``: mean + ``ucb_beta`` * std.

The ensemble learns ``target``: ``rank`` (default) the normal scores of the results' ranks, or
``standardize`` the results themselves, standardised (the earlier default). Accuracy tables have a
long tail of broken architectures (NAS-Bench-201: disconnected cells at 10%, most cells between 85%
and 94%); fitted on raw accuracies, a squared-error model spends itself on that tail, and the
differences among the good architectures, which the acquisition must rank, are left to noise. On
ranks every result weighs the same: on NAS-Bench-201 this took the best found after 50 evaluations
from 94.23 to 94.35 on CIFAR-10 (optimum 94.37), see benchmarks/RESULTS.md.

The ensemble is re-trained from scratch once the number of results has grown by ``refit_growth``
(10%: after every result up to 20, then every 2, 3, ... results; BANANAS itself refits once per
batch of 10 proposals), with its initialisation seeded by the strategy seed and the number of
results, so the model is a function of the told data: a restored strategy re-trains the same
weights instead of storing them. All members train together as one batched network (a hundred or so
full-batch steps of fused Adam; 100 by default), about 0.05 s per refit on one CPU thread.
"""
from __future__ import annotations

import numpy as np
import torch

from frugalnas.spaces.base import Arch
from frugalnas.strategies.base import STRATEGIES, Strategy, check_float, check_int

ACQUISITIONS = ("its", "ucb")
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


@STRATEGIES.register("predictor")
class PredictorSearch(Strategy):
    """BANANAS-style search: MLP-ensemble predictor, mutation candidates, Thompson sampling / UCB."""

    name = "predictor"

    def __init__(self, space, *, n_initial: int = 10, members: int = 5, hidden: int = 32, train_steps: int = 100,
                 lr: float = 0.01, weight_decay: float = 0.0, refit_growth: float = 0.1, acquisition: str = "its",
                 ucb_beta: float = 1.0, top_k: int = 10, n_mutations: int = 100, n_random: int = 10,
                 target: str = "rank", **common):
        super().__init__(space, **common)
        if target not in TARGETS:
            raise ValueError(f"target {target!r} is unknown; allowed: {', '.join(TARGETS)}")
        self.target = target
        self.n_initial = check_int("n_initial", n_initial, minimum=2)
        self.members = check_int("members", members, minimum=2)
        self.hidden = check_int("hidden", hidden, minimum=1)
        self.train_steps = check_int("train_steps", train_steps, minimum=1)
        self.lr = check_float("lr", lr, 0.0, 10.0, low_open=True)
        self.weight_decay = check_float("weight_decay", weight_decay, 0.0)
        self.refit_growth = check_float("refit_growth", refit_growth, 0.0)
        if acquisition not in ACQUISITIONS:
            raise ValueError(f"acquisition {acquisition!r} is unknown; allowed: {', '.join(ACQUISITIONS)}")
        self.acquisition = acquisition
        self.ucb_beta = check_float("ucb_beta", ucb_beta, 0.0)
        self.top_k = check_int("top_k", top_k, minimum=1)
        self.n_mutations = check_int("n_mutations", n_mutations, minimum=0)
        self.n_random = check_int("n_random", n_random, minimum=0)
        if self.n_mutations + self.n_random == 0:
            raise ValueError("n_mutations + n_random must be at least 1 (no candidates to choose from)")
        self._model: MLPEnsemble | None = None
        self._model_size = 0  # how many results (a prefix of history) the model was trained on
        self._target = (0.0, 1.0)  # mean and std used to standardise the targets
        self.last_fit_loss: float | None = None

    def params(self) -> dict:
        names = ("n_initial", "members", "hidden", "train_steps", "lr", "weight_decay", "refit_growth", "acquisition",
                 "ucb_beta", "top_k", "n_mutations", "n_random", "target")
        return {**super().params(), **{n: getattr(self, n) for n in names}}

    # ------------------------------------------------------------ model

    def _fit(self) -> None:
        """Make sure the model is current: (re-)train when enough new results have arrived."""
        if self._model is None and self._model_size:  # restored: first rebuild the model the run had
            self._train(self._model_size)
        n = len(self.history)
        if self._model is None or n - self._model_size >= max(1, int(self.refit_growth * self._model_size)):
            self._train(n)

    def _train(self, size: int) -> None:
        """Train a fresh ensemble on the first ``size`` told results."""
        told = dict(self.history[:size])  # an architecture told twice counts with its latest result
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
        self._model, self._model_size, self._target = model, size, (mean, std)

    def predict(self, archs: list[Arch]) -> tuple[np.ndarray, np.ndarray]:
        """Ensemble mean and std of the first objective (signed: larger is better) for ``archs``."""
        self._fit()
        x = torch.from_numpy(np.stack([self.space.encode(a) for a in archs]).astype(np.float32))
        with torch.no_grad():
            out = self._model(x).double().numpy()
        mean, std = self._target
        return out.mean(axis=0) * std + mean, out.std(axis=0) * std

    # ------------------------------------------------------------ proposals

    def _candidates(self) -> list[Arch]:
        """Unseen mutants of the best evaluated architectures, then a few random unseen ones."""
        ranked = sorted(self._told.items(), key=lambda item: -self.score(item[1]))[: self.top_k]
        parents = [arch for arch, _ in ranked]
        found: dict[Arch, None] = {}
        for j in range(self.n_mutations):
            child = self.space.mutate(parents[j % len(parents)], self.rng)
            if self.rng.random() < 0.5:  # edit distance 1 or 2
                child = self.space.mutate(child, self.rng)
            if not self.is_seen(child):
                found[child] = None
        for _ in range(self.n_random):
            arch = self.space.sample(self.rng)
            if not self.is_seen(arch):
                found[arch] = None
        return list(found)

    def _propose(self) -> Arch | None:
        if self.asked < self.n_initial or len(self._told) < 2:
            return self._sample_unseen()
        candidates = self._candidates()
        if not candidates:
            return self._sample_unseen()
        mean, std = self.predict(candidates)
        if self.acquisition == "its":
            value = self.rng.normal(mean, std)
        else:
            value = mean + self.ucb_beta * std
        return candidates[int(np.argmax(value))]

    def _strategy_state(self) -> dict:
        return {"model_size": self._model_size}

    def _load_strategy_state(self, state: dict) -> None:
        self._model, self._model_size = None, int(state["model_size"])
