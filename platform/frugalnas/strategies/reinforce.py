"""REINFORCE (Williams 1992) with a factorised categorical controller, as in NAS-Bench-201's
REINFORCE baseline (Zoph & Le's policy-gradient NAS reduced to a table of logits).

The policy has independent logits per decision of ``space.choices()``; an architecture is one draw
per decision. After each result the logits take an Adam step on

    advantage * log p(arch) + entropy_weight * H(policy),

where advantage = reward - baseline, the baseline an exponential moving average of the rewards
(momentum ``baseline_momentum``). The reward is shaped (``reward_shaping``):

* ``rank`` (default): the result's mid-rank among all results so far, in (0, 1), over the standard
  deviation of a uniform rank. Accuracy tables have a long tail of broken architectures (NAS-Bench-201:
  disconnected cells at 10%); with raw rewards those few outliers set the scale, and the differences
  among good architectures, which the search needs, become tiny advantages. Ranks give every result
  the same weight and are independent of the metric's units.
* ``standardize``: (reward - baseline) / standard deviation of all rewards so far (the earlier default).

With ranks the policy can take larger steps (``lr`` 0.2). On NAS-Bench-201 this moved rl from 93.80
to 94.12 at 50 evaluations on CIFAR-10 (random search: 93.76), see benchmarks/RESULTS.md.
Numpy only: the gradient of a softmax table is two lines, and the state is a few small arrays.

With surrogate screening (``screen``, 16 by default; see :class:`~frugalnas.strategies.base.Strategy`) the
evaluated architecture is the surrogate's pick among ``screen`` draws of the policy. A gradient from that
pick alone would be biased against whatever the screen keeps picking (it is not a sample of the policy),
so the policy learns from every draw, the passed-over ones at the reward the surrogate predicts for them,
in one averaged step per result (a batch policy gradient whose batch is mostly imagined, Dyna-style).
Draws that violate the constraints count as the worst reward, so a policy drawn towards large networks
learns to stay inside the limits instead of having its proposals refused for ever.
A step on such a batch is far less noisy than on one draw, so the screened policy gets a stronger entropy
bonus (``entropy_weight`` 0.3 instead of 0.1, unless set) to keep it from settling early.

The policy may sample an architecture it has already evaluated; the strategy then learns from the
known result at no cost and samples again (counted in ``reused``), so evaluations are never spent
twice on one architecture.
"""
from __future__ import annotations

import bisect

import numpy as np

from frugalnas.spaces.base import Arch
from frugalnas.strategies.base import STRATEGIES, Strategy, check_float

REWARD_SHAPINGS = ("rank", "standardize")
UNIFORM_STD = float(np.sqrt(1 / 12))  # standard deviation of a rank spread uniformly over (0, 1)
ENTROPY_WEIGHT = 0.1
# A screened policy steps on the average of ``screen`` draws: its gradient is far less noisy, its Adam steps keep
# one direction, and at 0.1 it settled onto a few architectures within ~50 evaluations. It then drew already
# evaluated ones by the thousand (about 10,000 per 150-evaluation search) and found NAS-Bench-201's
# ImageNet16-120 optimum in 4 of 20 searches; at 0.3, about 500-1,000 and 16 of 20, within the seed noise at
# 25 and 50 evaluations (seeds 2000-2019, not the benchmark's reported seeds; benchmarks/RESULTS.md).
SCREENED_ENTROPY_WEIGHT = 0.3
REFUSED_BATCH = 16  # refused draws in a row that make a policy step of their own (ask() may draw many)


@STRATEGIES.register("rl")
class Reinforce(Strategy):
    """Policy-gradient search with a moving-average baseline and an entropy bonus."""

    name = "rl"
    default_screen = 16  # the surrogate picks each proposal from 16 of its own (see Strategy)
    may_repeat = True

    def __init__(self, space, *, lr: float = 0.2, baseline_momentum: float = 0.9, entropy_weight: float | None = None,
                 reward_shaping: str = "rank", **common):
        super().__init__(space, **common)
        if reward_shaping not in REWARD_SHAPINGS:
            raise ValueError(f"reward_shaping {reward_shaping!r} is unknown; allowed: {', '.join(REWARD_SHAPINGS)}")
        self.reward_shaping = reward_shaping
        self._rewards: list[float] = []  # every reward learnt from, sorted (rank shaping)
        self.lr = check_float("lr", lr, 0.0, 10.0, low_open=True)
        self.baseline_momentum = check_float("baseline_momentum", baseline_momentum, 0.0, 1.0)
        if entropy_weight is None:  # see SCREENED_ENTROPY_WEIGHT
            entropy_weight = ENTROPY_WEIGHT if self.screen == 1 else SCREENED_ENTROPY_WEIGHT
        self.entropy_weight = check_float("entropy_weight", entropy_weight, 0.0)
        self._offsets = np.cumsum([0] + self._radix)
        n = int(self._offsets[-1])
        self.logits = np.zeros(n)  # uniform policy to start
        self._adam_m, self._adam_v, self._adam_t = np.zeros(n), np.zeros(n), 0
        self.baseline: float | None = None
        self._stats = [0, 0.0, 0.0]  # Welford's count, mean and sum of squared deviations of the rewards
        self._passed_over: list[Arch] = []  # draws withdrawn by the screen since the last update
        self._refused: list[Arch] = []  # draws refused by the constraints since the last update

    def params(self) -> dict:
        return {**super().params(), "lr": self.lr, "baseline_momentum": self.baseline_momentum,
                "entropy_weight": self.entropy_weight, "reward_shaping": self.reward_shaping}

    def _slices(self):
        return [slice(int(a), int(b)) for a, b in zip(self._offsets[:-1], self._offsets[1:])]

    def probabilities(self) -> list[np.ndarray]:
        """The policy: one probability vector per decision."""
        out = []
        for part in self._slices():
            z = self.logits[part] - self.logits[part].max()
            p = np.exp(z)
            out.append(p / p.sum())
        return out

    def _propose(self) -> Arch:
        # inverse-CDF draws, one uniform number per decision
        choices = [min(int(np.searchsorted(np.cumsum(p), self.rng.random(), side="right")), len(p) - 1)
                   for p in self.probabilities()]
        return self.space.from_choices(choices)

    def _shaped(self, reward: float, new: bool) -> float:
        """The reward as the policy sees it: its mid-rank among the rewards of the architectures
        evaluated so far, in (0, 1), over the standard deviation of a uniform rank (so it is on the
        scale of a standardised reward). A known architecture sampled again is ranked, not added."""
        if new:
            bisect.insort(self._rewards, reward)
        low, high = bisect.bisect_left(self._rewards, reward), bisect.bisect_right(self._rewards, reward)
        return (low + high) / 2 / len(self._rewards) / UNIFORM_STD

    def _reused(self, arch: Arch, result: dict) -> None:
        self._learn(arch, result, new=False)

    def _withdrawn(self, arch: Arch) -> None:
        self._passed_over.append(arch)

    def _imagined_rewards(self, archs: list[Arch]) -> list[float]:
        """Rewards for draws the screen passed over, from the surrogate: its predicted rank, as the told
        reward at that quantile, shaped like a told one (ranked, never added)."""
        from scipy.stats import norm

        mean, _ = self._surrogate.predict(self.history, archs)  # normal scores of ranks (the surrogate's target)
        told = np.array([self.score(r) for r in self._told.values()])
        raw = np.quantile(told, norm.cdf(mean))
        return [self._shaped(float(r), False) if self.reward_shaping == "rank" else float(r) for r in raw]

    def _rejected(self, arch: Arch) -> None:
        # A draw that violates the constraints is, for the policy, the worst outcome there is. Without this a
        # policy drawn towards large, accurate architectures would keep proposing ones the constraints refuse.
        self._refused.append(arch)
        if len(self._refused) >= REFUSED_BATCH and self.baseline is not None:
            self._step([])

    def _worst_reward(self) -> float:
        if self.reward_shaping == "rank":
            return 0.0
        return min(self.score(r) for r in self._told.values())

    def _scale(self) -> float:
        count, _, m2 = self._stats
        return 1.0 if self.reward_shaping == "rank" else float(np.sqrt(m2 / count)) if count else 0.0

    def _learn(self, arch: Arch, result: dict, new: bool = True) -> None:
        reward = self.score(result)
        imagined: list[tuple[Arch, float]] = []
        if self._passed_over and self._surrogate is not None:
            # With screening the evaluated architecture is the surrogate's pick of several draws, not a draw
            # of the policy: a policy gradient from it alone is biased towards what the screen does not pick.
            # All the draws are samples of the policy, so it learns from all of them, the passed-over ones at
            # the surrogate's predicted reward (one averaged step, as a batch policy gradient).
            imagined = list(zip(self._passed_over, self._imagined_rewards(self._passed_over)))
        self._passed_over = []
        if self.reward_shaping == "rank":
            reward = self._shaped(reward, new)
        count, mean, m2 = self._stats
        count += 1
        delta = reward - mean
        mean += delta / count
        m2 += delta * (reward - mean)
        self._stats = [count, mean, m2]
        if self.baseline is None:
            self.baseline = reward
        self._step([(arch, reward)] + imagined)
        self.baseline = self.baseline_momentum * self.baseline + (1 - self.baseline_momentum) * reward

    def _step(self, samples: list[tuple[Arch, float]]) -> None:
        """One Adam step on  mean_i advantage_i * log p(arch_i) + entropy_weight * sum_d H(p_d)  over ``samples``
        (architecture, shaped reward) and the refused draws since the last step (at the worst reward)."""
        if self._refused:
            samples = samples + [(a, self._worst_reward()) for a in self._refused]
            self._refused = []
        scale = self._scale()
        advantages = [(r - self.baseline) / scale if scale > 0 else 0.0 for _, r in samples]
        grad = np.empty_like(self.logits)
        all_choices = [self.space.to_choices(a) for a, _ in samples]
        for d, (part, p) in enumerate(zip(self._slices(), self.probabilities())):
            score_term = np.zeros_like(p)
            for advantage, choices in zip(advantages, all_choices):
                if choices[d] >= 0:  # an inactive decision took no part in the architecture: no credit to assign
                    one_hot = np.zeros_like(p)
                    one_hot[choices[d]] = 1.0
                    score_term += advantage * (one_hot - p)
            log_p = np.log(np.maximum(p, 1e-300))
            entropy = -(p * log_p).sum()
            grad[part] = score_term / len(samples) - self.entropy_weight * p * (log_p + entropy)
        self._adam_ascent(grad)

    def _adam_ascent(self, grad: np.ndarray, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8) -> None:
        self._adam_t += 1
        self._adam_m = beta1 * self._adam_m + (1 - beta1) * grad
        self._adam_v = beta2 * self._adam_v + (1 - beta2) * grad**2
        m_hat = self._adam_m / (1 - beta1**self._adam_t)
        v_hat = self._adam_v / (1 - beta2**self._adam_t)
        self.logits = self.logits + self.lr * m_hat / (np.sqrt(v_hat) + eps)

    def _strategy_state(self) -> dict:
        return {"logits": self.logits.tolist(), "adam_m": self._adam_m.tolist(), "adam_v": self._adam_v.tolist(),
                "adam_t": self._adam_t, "baseline": self.baseline, "reward_stats": list(self._stats),
                "rewards": list(self._rewards), "passed_over": [str(a) for a in self._passed_over],
                "refused": [str(a) for a in self._refused]}

    def _load_strategy_state(self, state: dict) -> None:
        self.logits = np.asarray(state["logits"], dtype=np.float64)
        self._adam_m = np.asarray(state["adam_m"], dtype=np.float64)
        self._adam_v = np.asarray(state["adam_v"], dtype=np.float64)
        self._adam_t = int(state["adam_t"])
        self.baseline = state["baseline"]
        self._stats = [int(state["reward_stats"][0]), float(state["reward_stats"][1]), float(state["reward_stats"][2])]
        self._rewards = [float(r) for r in state.get("rewards", [])]
        self._passed_over = [self.space.parse(text) for text in state.get("passed_over", [])]
        self._refused = [self.space.parse(text) for text in state.get("refused", [])]
