"""The search-strategy interface (ask/tell) and the strategy registry.

A strategy proposes architectures of a :class:`~frugalnas.spaces.Space` one at a time and learns
from their results; it knows nothing of how a result is obtained (a tabular lookup, a training
loop, a Ray Tune trial)::

    strategy = make_strategy("evolution", space, seed=0, objectives=["accuracy", "-params"])
    for _ in range(budget):
        arch = strategy.ask()
        if arch is None:          # the space is exhausted
            break
        strategy.tell(arch, {"accuracy": evaluate(arch), "params": space.count_params(arch, 10, 3)})
    strategy.pareto_front()       # non-dominated (arch, result) pairs

Strategies register in :data:`STRATEGIES` under the name used in YAML. Shared behaviour lives
here so every strategy does it the same way:

* objectives (``"accuracy"`` maximise, ``"-params"`` minimise; see :mod:`.pareto`); strategies
  that optimise one metric use the first objective, every strategy keeps the Pareto front;
* constraints such as ``{"max_params": 2e5}``, checked in :meth:`Strategy.ask` before an
  architecture is returned, so a violating one is never trained (counted in ``rejected``);
* architectures already evaluated are never evaluated again: strategies that cannot repeat by
  design (random, evolution, predictor) skip them, and those that may propose one again (rl,
  optuna) are told its known result instead and asked again (counted in ``reused``);
* ``state_dict()`` / ``load_state_dict()`` with JSON types only: a restored strategy continues
  exactly as an uninterrupted one would.
"""
from __future__ import annotations

import copy
import inspect
import json
import math
import numbers
import re
from abc import ABC, abstractmethod
from typing import Any, Callable, ClassVar, Mapping

import numpy as np

from frugalnas.errors import ConfigError
from frugalnas.registry import Registry
from frugalnas.spaces.base import Arch, Space
from frugalnas.strategies.pareto import Objective, check_result, parse_objectives, pareto_front

STRATEGIES: Registry[type["Strategy"]] = Registry("search strategy")

# Spaces up to this size are enumerated when random draws keep hitting evaluated architectures.
ENUMERATE_LIMIT = 2_000_000
_CONSTRAINT = re.compile(r"^(max|min)_([A-Za-z_][A-Za-z0-9_.:/]*)$")
_SPACE_METRICS = {"params": ("num_classes", "in_channels"), "flops": ("num_classes", "in_channels", "image_size")}


class InvalidStrategySetting(ConfigError, ValueError):
    """A strategy parameter with a value it does not accept (still a ValueError for code that builds
    strategies directly)."""


def make_strategy(name: str, space: Space | str, **params) -> "Strategy":
    """Build the strategy registered as ``name``; an unknown name or parameter fails with the
    allowed ones listed (a misspelt YAML key must not be silently ignored)."""
    cls = STRATEGIES.get(name)
    allowed = strategy_parameters(cls)
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise ConfigError(f"search strategy {name!r} got unknown parameter(s) {', '.join(unknown)}; "
                          f"allowed: {', '.join(allowed)}")
    try:
        return cls(space, **params)
    except ValueError as error:  # a bad value: the same user-facing error as a bad name
        raise InvalidStrategySetting(f"search strategy {name!r}: {error}") from None


def strategy_parameters(cls: type["Strategy"]) -> list[str]:
    """The keyword parameters ``cls`` accepts: its own and those of every base up to :class:`Strategy`."""
    names: list[str] = []
    for klass in cls.__mro__:
        if "__init__" not in vars(klass) or not issubclass(klass, Strategy):
            continue
        for p in inspect.signature(klass.__init__).parameters.values():
            if p.kind is p.KEYWORD_ONLY and p.name not in names:
                names.append(p.name)
    return names


def check_int(name: str, value: Any, minimum: int = 0) -> int:
    """An integer >= ``minimum`` (bools and non-integral floats are refused)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_float(name: str, value: Any, low: float = -math.inf, high: float = math.inf,
                low_open: bool = False) -> float:
    """A finite number in [low, high] (or (low, high] with ``low_open``)."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (value > low if low_open else value >= low) and value <= high
    if not ok:
        bracket = "(" if low_open else "["
        raise ValueError(f"{name} must be a number in {bracket}{low}, {high}], got {value!r}")
    return float(value)


class Strategy(ABC):
    """Proposes architectures (:meth:`ask`) and learns from their results (:meth:`tell`).

    Parameters common to every strategy:

    ``seed``
        Seeds every random choice; the same seed and the same results give the same proposals.
    ``objectives``
        Metric names to maximise, ``-name`` to minimise (default ``["accuracy"]``).
    ``constraints``
        ``{"max_<metric>": x, "min_<metric>": y}`` on metrics known before training. The metrics
        come from ``metrics_fn(arch) -> dict`` if given; otherwise the space counts ``params``
        (needs ``num_classes`` and ``in_channels``) and ``flops`` (also ``image_size``).
    ``max_attempts``
        How many proposals in a row may be rejected or already evaluated before :meth:`ask`
        gives up with a ConfigError (constraints that almost nothing satisfies).
    ``max_reuse``
        For strategies that may repeat (rl, optuna): after this many already evaluated proposals in
        one :meth:`ask`, the next such proposal is returned anyway and evaluated again (a policy
        that has converged onto known architectures would otherwise spin).
    ``screen``
        Surrogate screening: once ``screen_after`` results are known, each :meth:`ask` draws this
        many proposals from the strategy and returns the one that a surrogate model of the results
        (:class:`~frugalnas.strategies.surrogate.Surrogate`, an MLP ensemble refitted as results
        arrive) favours (the best Thompson draw from its prediction); the others are withdrawn (the strategy hears of them as
        :meth:`_withdrawn`, never as results). 1 turns it off. The idea is neural-predictor-guided
        evolution (NPENAS, Wei et al., IEEE TNNLS 2022) applied to any proposer: the strategy keeps
        its own way of exploring, and the few evaluations a search can afford go to the proposals
        the results so far favour. Each strategy sets its default (``default_screen``) for searches
        of one objective; with several it is 1 unless set, and then screens by the first objective.
    ``screen_after``
        How many told results the surrogate needs before it screens (default 5).

    Subclasses implement :meth:`_propose` and the hooks they need (``_learn``, ``_accepted``,
    ``_rejected``, ``_reused``, ``_failed``, ``_strategy_state``, ``_load_strategy_state``).
    """

    name: ClassVar[str] = ""  # the registry name; set by each strategy
    may_repeat: ClassVar[bool] = False  # True if _propose can return an already evaluated architecture
    screens: ClassVar[bool] = True  # False for a strategy that already picks every proposal with a model
    default_screen: ClassVar[int] = 1  # proposals per ask() to screen, unless the ``screen`` parameter says

    def __init__(self, space: Space | str, *, seed: int = 0, objectives=("accuracy",), constraints=None,
                 metrics_fn: Callable[[Arch], Mapping[str, float]] | None = None, num_classes: int | None = None,
                 in_channels: int | None = None, image_size: int | None = None, max_attempts: int = 1000,
                 max_reuse: int = 100, screen: int | None = None, screen_after: int = 5):
        if isinstance(space, str):
            from frugalnas.spaces import load_space

            space = load_space(space)
        if not isinstance(space, Space):
            raise TypeError(f"{self.name}: space must be a Space (or a space name), got {type(space).__name__}")
        self.space = space
        self.seed = check_int("seed", seed)
        self.objectives: tuple[Objective, ...] = parse_objectives(objectives)
        self.max_attempts = check_int("max_attempts", max_attempts, minimum=1)
        self.max_reuse = check_int("max_reuse", max_reuse, minimum=0)
        # the surrogate models the first objective only: screening a multi-objective search is a choice to make
        default = self.default_screen if len(self.objectives) == 1 else 1
        self.screen = default if screen is None else check_int("screen", screen, minimum=1)
        if self.screen > 1 and not self.screens:
            raise ValueError(f"{self.name} chooses every proposal with its own model; screen must be 1, got {screen}")
        self.screen_after = check_int("screen_after", screen_after, minimum=2)
        self._surrogate = None  # built at the first screened ask()
        self.metrics_fn = metrics_fn
        self._counting = {"num_classes": num_classes, "in_channels": in_channels, "image_size": image_size}
        self.constraints = self._parse_constraints(constraints)
        self._decisions = space.choices()
        self._radix = [len(options) for _, options in self._decisions]
        self._size = space.size()
        self.rng = np.random.default_rng(self.seed)

        self.history: list[tuple[Arch, dict]] = []  # told (arch, result), in tell order
        self._told: dict[Arch, dict] = {}  # latest result per architecture
        self._pending: list[Arch] = []  # asked, not yet told (a list: a repeating strategy may ask one twice)
        self._infeasible: dict[Arch, None] = {}  # rejected by the constraints (ordered set)
        self._feasibility: dict[Arch, bool] = {}  # cache of constraint checks (recomputed after a restore)
        self.asked = 0  # architectures returned by ask()
        self.rejected = 0  # proposals not returned: they violate the constraints (or failed before)
        self.reused = 0  # proposals already evaluated, answered from their known result
        self.failed = 0  # tells without a result
        self.withdrawn = 0  # proposals the screen passed over
        self._finished = False

    # ------------------------------------------------------------ what strategies implement

    @abstractmethod
    def _propose(self) -> Arch | None:
        """The next candidate, or None if the space is exhausted. Strategies with ``may_repeat``
        False must not return an architecture that :meth:`is_seen`."""

    def _accepted(self, arch: Arch) -> None:
        """The last proposal passed the checks and is returned by :meth:`ask`."""

    def _rejected(self, arch: Arch) -> None:
        """The last proposal violated the constraints; it will not be returned."""

    def _reused(self, arch: Arch, result: dict) -> None:
        """The last proposal was evaluated before; learn from its known ``result`` (by default as
        if it had been told again)."""
        self._learn(arch, result)

    def _learn(self, arch: Arch, result: dict) -> None:
        """A new result was told (already checked and recorded in :attr:`history`)."""

    def _failed(self, arch: Arch) -> None:
        """The evaluation of ``arch`` failed (told without a result)."""

    def _withdrawn(self, arch: Arch) -> None:
        """``arch`` passed the checks (:meth:`_accepted` was called) but the screen chose another
        proposal: it will not be returned, and may be proposed again later."""

    def params(self) -> dict:
        """The parameters that define the strategy, as JSON types (checked on resume)."""
        return {"seed": self.seed, "objectives": [str(o) for o in self.objectives],
                "constraints": {k: v for k, v in sorted(self.constraints.items())},
                "max_attempts": self.max_attempts, "max_reuse": self.max_reuse, "screen": self.screen,
                "screen_after": self.screen_after}

    def _strategy_state(self) -> dict:
        return {}

    def _load_strategy_state(self, state: dict) -> None:
        pass

    # ------------------------------------------------------------ the public loop

    @property
    def finished(self) -> bool:
        """True once :meth:`ask` has returned None: nothing is left to propose."""
        return self._finished

    def ask(self) -> Arch | None:
        """The next architecture to evaluate, or None when the space is exhausted.

        Proposals that violate the constraints are rejected here and never returned; a repeating
        strategy's proposals that were already evaluated are answered from their known result.
        With screening on (``screen`` > 1, at least ``screen_after`` results), up to ``screen``
        usable proposals are gathered and the surrogate's favourite is returned.
        """
        if self._finished:
            return None
        wanted = self.screen if self.screen > 1 and len(self._told) >= self.screen_after else 1
        candidates: list[Arch] = []
        rejected = reused = repeats = 0
        for _ in range(self.max_attempts):
            if len(candidates) >= wanted or (candidates and rejected + reused + repeats >= wanted):
                break  # enough candidates, or as many unusable proposals as the screen's size: choose now
            if self.may_repeat and len(self._told) + len(self._infeasible) >= self._size:
                break  # every architecture is evaluated or infeasible
            arch = self._propose()
            if arch is None:
                break
            if arch in self._told:
                if not self.may_repeat:
                    raise RuntimeError(f"{self.name}: proposed {arch}, which was already evaluated")
                if reused < self.max_reuse:
                    self.reused += 1
                    reused += 1
                    self._reused(arch, self._told[arch])
                    continue
            elif not self.feasible(arch):
                self.rejected += 1
                rejected += 1
                self._infeasible[arch] = None
                self._rejected(arch)
                continue
            self._accepted(arch)
            if arch in candidates:  # a repeating strategy proposed it twice in one screen
                repeats += 1
                self._withdrawn(arch)
                continue
            candidates.append(arch)
            self._pending.append(arch)  # is_seen() from here on: the next proposal is another one
        else:
            if not candidates:
                raise ConfigError(
                    f"{self.name}: {self.max_attempts} proposals in a row could not be used ({rejected} violated the "
                    f"constraints {self.constraints}, {reused} were already evaluated); loosen the constraints or "
                    "raise max_attempts")
        if not candidates:
            self._finished = True
            return None
        pick = self._screen_choice(candidates) if len(candidates) > 1 else 0
        for i, arch in enumerate(candidates):
            if i != pick:
                self._pending.remove(arch)
                self.withdrawn += 1
                self._withdrawn(arch)
        self.asked += 1
        return candidates[pick]

    def _screen_choice(self, candidates: list[Arch]) -> int:
        """The index of the candidate with the best Thompson draw from the surrogate (a draw from
        N(ensemble mean, ensemble std) per candidate, as BANANAS' independent Thompson sampling)."""
        if self._surrogate is None:
            from frugalnas.strategies.surrogate import Surrogate

            self._surrogate = Surrogate(self.space, self.score, seed=self.seed)
        mean, std = self._surrogate.predict(self.history, candidates)
        return int(np.argmax(self.rng.normal(mean, std)))

    def tell(self, arch: Arch, result: Mapping[str, Any] | None) -> None:
        """The result of evaluating ``arch`` (a proposal of :meth:`ask`): a mapping holding every
        objective metric, or None if the evaluation failed (then ``arch`` is treated as infeasible
        and not proposed again)."""
        try:
            self._pending.remove(arch)
        except ValueError:
            pending = ", ".join(str(a) for a in self._pending[:3]) or "none"
            raise ValueError(f"{self.name}: tell() got {arch}, which is not awaiting a result (never proposed by "
                             f"ask(), or already told); awaiting: {pending}"
                             f"{' ...' if len(self._pending) > 3 else ''}") from None
        if result is None:  # never proposed again: counts as infeasible from now on
            self.failed += 1
            self._infeasible[arch] = None
            self._failed(arch)
            return
        try:
            result = check_result(result, self.objectives, where=f"result of {arch}")
        except ValueError:
            self._pending.append(arch)  # a bad call must not lose the proposal
            raise
        self.history.append((arch, result))
        self._told[arch] = result
        self._learn(arch, result)

    # ------------------------------------------------------------ results

    def score(self, result: Mapping[str, Any]) -> float:
        """The first objective of ``result``, signed so that larger is better."""
        first = self.objectives[0]
        return first.sign * float(result[first.name])

    def best(self) -> tuple[Arch, dict] | None:
        """The told ``(arch, result)`` with the best first objective (the earliest on ties)."""
        if not self._told:
            return None
        return max(self._told.items(), key=lambda item: self.score(item[1]))

    def pareto_front(self) -> list[tuple[Arch, dict]]:
        """The told ``(arch, result)`` pairs that no other told result dominates on all objectives."""
        return pareto_front(self.history, [str(o) for o in self.objectives])

    @property
    def infeasible(self) -> list[Arch]:
        """Architectures rejected by the constraints or whose evaluation failed, in that order."""
        return list(self._infeasible)

    @property
    def pending(self) -> list[Arch]:
        """Architectures asked and not yet told."""
        return list(self._pending)

    def is_seen(self, arch: Arch) -> bool:
        """Evaluated, awaiting a result, known to violate the constraints, or failed."""
        return arch in self._told or arch in self._infeasible or arch in self._pending

    # ------------------------------------------------------------ constraints

    def _parse_constraints(self, constraints) -> dict[str, float]:
        if constraints is None:
            return {}
        if not isinstance(constraints, Mapping):
            raise ConfigError(f"constraints must be a mapping like {{'max_params': 200000}}, got {constraints!r}")
        parsed = {}
        for key, value in constraints.items():
            match = _CONSTRAINT.match(str(key))
            if not match:
                raise ConfigError(f"constraint {key!r} must be written 'max_<metric>' or 'min_<metric>', "
                                  "e.g. max_params, max_flops")
            metric = match.group(2)
            if self.metrics_fn is None:
                if metric not in _SPACE_METRICS:
                    raise ConfigError(f"constraint {key!r}: metric {metric!r} is not one the space can count; "
                                      f"allowed without a metrics_fn: {', '.join(_SPACE_METRICS)}")
                missing = [p for p in _SPACE_METRICS[metric] if self._counting[p] is None]
                if missing:
                    raise ConfigError(f"constraint {key!r} needs {', '.join(missing)} to count {metric} "
                                      "(or pass a metrics_fn)")
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
                raise ConfigError(f"constraint {key!r} must be a finite number, got {value!r}")
            parsed[str(key)] = float(value)
        return parsed

    def arch_metrics(self, arch: Arch) -> dict:
        """Metrics known before training that the constraints refer to (``metrics_fn`` or the space's counts)."""
        if self.metrics_fn is not None:
            metrics = self.metrics_fn(arch)
            if not isinstance(metrics, Mapping):
                raise TypeError(f"metrics_fn must return a mapping of metric names to numbers, got {metrics!r}")
            return dict(metrics)
        c = self._counting
        metrics = {}
        names = {_CONSTRAINT.match(k).group(2) for k in self.constraints}
        if "params" in names:
            metrics["params"] = self.space.count_params(arch, c["num_classes"], c["in_channels"])
        if "flops" in names:
            metrics["flops"] = self.space.count_flops(arch, c["num_classes"], c["in_channels"], c["image_size"])
        return metrics

    def feasible(self, arch: Arch) -> bool:
        """Whether ``arch`` satisfies every constraint (cached per architecture)."""
        if not self.constraints:
            return True
        if arch in self._feasibility:
            return self._feasibility[arch]
        metrics = self.arch_metrics(arch)
        ok = True
        for key, limit in self.constraints.items():
            bound, metric = _CONSTRAINT.match(key).groups()
            if metric not in metrics:
                raise ConfigError(f"constraint {key!r}: metrics_fn returned no {metric!r}; it returned: "
                                  f"{', '.join(sorted(metrics)) or 'nothing'}")
            value = float(metrics[metric])
            ok = ok and (value <= limit if bound == "max" else value >= limit)
        self._feasibility[arch] = ok
        return ok

    # ------------------------------------------------------------ helpers for strategies

    def arch_index(self, arch: Arch) -> int:
        """The position of ``arch`` in the space's enumeration (:meth:`Space.index`)."""
        return self.space.index(arch)

    def arch_at(self, index: int) -> Arch:
        """The architecture at ``index`` of the enumeration (inverse of :meth:`arch_index`)."""
        return self.space.at(index)

    def _sample_unseen(self) -> Arch | None:
        """A uniformly random architecture that :meth:`is_seen` is false for, or None if none is left.

        Rejection sampling (exactly uniform over the unseen ones); when draws keep hitting seen
        architectures in a small space, the unseen ones are enumerated instead.
        """
        n_seen = len(self._told) + len(self._infeasible) + len(set(self._pending) - set(self._told))
        if n_seen >= self._size:
            return None
        for _ in range(32):
            arch = self.space.sample(self.rng)
            if not self.is_seen(arch):
                return arch
        if self._size <= ENUMERATE_LIMIT:
            seen = np.fromiter((self.arch_index(a) for a in {*self._told, *self._infeasible, *self._pending}),
                               dtype=np.int64)
            unseen = np.setdiff1d(np.arange(self._size, dtype=np.int64), seen)
            if not len(unseen):
                return None
            return self.arch_at(int(unseen[self.rng.integers(len(unseen))]))
        for _ in range(10_000):  # a huge space that is nearly all seen: keep drawing
            arch = self.space.sample(self.rng)
            if not self.is_seen(arch):
                return arch
        raise RuntimeError(f"{self.name}: no unseen architecture found in 10,000 draws")

    def _mutate_unseen(self, parent: Arch, tries: int = 100) -> Arch | None:
        """An unseen architecture near ``parent``: one mutation of it if possible, else a random walk
        away from it, else a random unseen architecture."""
        child = parent
        for attempt in range(tries):
            child = self.space.mutate(parent if attempt < tries // 2 else child, self.rng)
            if not self.is_seen(child):
                return child
        return self._sample_unseen()

    # ------------------------------------------------------------ checkpointing

    def state_dict(self) -> dict:
        """Everything needed to continue exactly where this strategy is; JSON types only."""
        return {
            "strategy": self.name,
            "params": json.loads(json.dumps(self.params())),
            "space": {"family": self.space.family, "size": self._size},
            "rng": copy.deepcopy(self.rng.bit_generator.state),
            "history": [[str(arch), dict(result)] for arch, result in self.history],
            "pending": [str(arch) for arch in self._pending],
            "infeasible": [str(arch) for arch in self._infeasible],
            "counters": {"asked": self.asked, "rejected": self.rejected, "reused": self.reused, "failed": self.failed,
                         "withdrawn": self.withdrawn},
            "screen_model_size": self._surrogate.model_size if self._surrogate is not None else 0,
            "finished": self._finished,
            "strategy_state": copy.deepcopy(self._strategy_state()),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue from ``state``; this strategy must be built with the same space and parameters."""
        if state.get("strategy") != self.name:
            raise ValueError(f"state is from strategy {state.get('strategy')!r}, cannot load it into {self.name!r}")
        space = state["space"]
        if space["family"] != self.space.family or space["size"] != self._size:
            raise ValueError(f"state was saved for a {space['family']} space of {space['size']} architectures, "
                             f"this strategy searches a {self.space.family} space of {self._size}")
        mine = json.loads(json.dumps(self.params()))
        saved = {"screen": 1, "screen_after": 5, **state["params"]}  # states from before screening existed
        for key in sorted(set(mine) | set(saved)):
            if mine.get(key) != saved.get(key):
                raise ValueError(f"state was saved with {key}={saved.get(key)!r} but this strategy has "
                                 f"{key}={mine.get(key)!r}; build it with the saved parameters to resume")
        parse = self.space.parse
        self.rng.bit_generator.state = copy.deepcopy(state["rng"])
        self.history = [(parse(text), dict(result)) for text, result in state["history"]]
        self._told = {}
        for arch, result in self.history:
            self._told[arch] = result
        self._pending = [parse(text) for text in state["pending"]]
        self._infeasible = {parse(text): None for text in state["infeasible"]}
        counters = state["counters"]
        self.asked, self.rejected = int(counters["asked"]), int(counters["rejected"])
        self.reused, self.failed = int(counters["reused"]), int(counters["failed"])
        self.withdrawn = int(counters.get("withdrawn", 0))
        self._surrogate = None
        if state.get("screen_model_size"):
            from frugalnas.strategies.surrogate import Surrogate

            self._surrogate = Surrogate(self.space, self.score, seed=self.seed)
            self._surrogate.restore(state["screen_model_size"])
        self._finished = bool(state["finished"])
        self._load_strategy_state(copy.deepcopy(state["strategy_state"]))

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self.params().items())
        return f"{type(self).__name__}({params})"
