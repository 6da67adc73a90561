"""Optuna's samplers as baseline strategies: ``optuna-tpe`` (TPESampler) and ``optuna-nsga2``
(NSGAIISampler), driven through Optuna's ask/tell interface.

Each proposal is one ``study.ask()`` with ``trial.suggest_categorical`` per decision of
``space.choices()`` (over option indices, so any space works; a conditional decision only when it
is active, Optuna's define-by-run); results go back with
``study.tell``. Both use every objective (``directions``), so with two or more objectives they
search the Pareto front (TPE as MOTPE). A proposal that violates the constraints is told as a
failed trial (both samplers ignore failed trials); a proposal that was already evaluated is told
its known values at once and Optuna is asked again. With surrogate screening (``screen``, 16 by
default for one objective) each proposal is the surrogate's pick of 16 asks; the other 15 trials are
told as failed, so the sampler learns only from evaluated results.

Checkpointing: the state holds the log of every ask and tell in order; restoring replays it into
a fresh study with the same seeded sampler. That re-creates the sampler's random state and the
study exactly (checked: each replayed ask must suggest what the log says), stays plain JSON, and
does not depend on pickling Optuna's objects (which may change between Optuna versions). The
cost is one ``ask`` per logged trial when loading, milliseconds each. Pickling (Ray Tune pickles
the search algorithm) goes the same way.
"""
from __future__ import annotations

from typing import Any, ClassVar

from frugalnas.spaces.base import Arch
from frugalnas.strategies.base import STRATEGIES, Strategy, check_int


class OptunaStrategy(Strategy):
    """Base of the Optuna-backed strategies; subclasses say which sampler."""

    may_repeat = True
    sampler_params: ClassVar[tuple[str, ...]] = ()
    default_screen = 16  # the surrogate picks each proposal from 16 of its own (see Strategy)

    def __init__(self, space, **common):
        super().__init__(space, **common)
        import optuna

        # Optuna logs every finished trial at INFO; a search of hundreds of trials floods the console.
        if optuna.logging.get_verbosity() < optuna.logging.WARNING:
            optuna.logging.set_verbosity(optuna.logging.WARNING)
        self._optuna = optuna
        self._log: list[list[Any]] = []  # ["ask", choice indices] / ["tell", trial number, values or None]
        self._open: dict[Arch, list[int]] = {}  # proposals awaiting a result -> their trial numbers
        self._trial = None  # the trial behind the proposal being checked by ask()
        self.study = self._new_study()

    def _sampler(self):
        raise NotImplementedError

    def _new_study(self):
        directions = ["maximize" if o.direction == "max" else "minimize" for o in self.objectives]
        return self._optuna.create_study(sampler=self._sampler(), directions=directions)

    def params(self) -> dict:
        return {**super().params(), **{n: getattr(self, n) for n in self.sampler_params}}

    # ------------------------------------------------------------ ask / tell plumbing

    def _ask_trial(self):
        trial = self.study.ask()
        choices: list[int] = []
        for d, (name, options) in enumerate(self._decisions):
            # define-by-run: a decision that does not exist for the earlier choices is not suggested
            active = self.space.decision_active(d, choices)
            choices.append(int(trial.suggest_categorical(name, list(range(len(options))))) if active else -1)
        return trial, choices

    def _tell_study(self, number: int, values: list[float] | None) -> None:
        self._log.append(["tell", number, values])
        if values is None:
            self.study.tell(number, state=self._optuna.trial.TrialState.FAIL)
        else:
            self.study.tell(number, values)

    def _values(self, result: dict) -> list[float]:
        return [float(result[o.name]) for o in self.objectives]

    def _propose(self) -> Arch:
        self._trial, choices = self._ask_trial()
        self._log.append(["ask", choices])
        return self.space.from_choices(choices)

    def _accepted(self, arch: Arch) -> None:
        self._open.setdefault(arch, []).append(self._trial.number)

    def _rejected(self, arch: Arch) -> None:
        self._tell_study(self._trial.number, None)

    def _reused(self, arch: Arch, result: dict) -> None:
        self._tell_study(self._trial.number, self._values(result))

    def _take_open(self, arch: Arch, last: bool = False) -> int:
        """The trial number of an open proposal of ``arch``: the oldest, or with ``last`` the newest."""
        numbers = self._open[arch]
        number = numbers.pop(-1 if last else 0)
        if not numbers:
            del self._open[arch]
        return number

    def _learn(self, arch: Arch, result: dict) -> None:
        self._tell_study(self._take_open(arch), self._values(result))

    def _failed(self, arch: Arch) -> None:
        self._tell_study(self._take_open(arch), None)

    def _withdrawn(self, arch: Arch) -> None:
        # the trial of this proposal is the last one opened for arch; failed trials are ignored by both samplers
        self._tell_study(self._take_open(arch, last=True), None)

    # ------------------------------------------------------------ checkpointing

    def _strategy_state(self) -> dict:
        return {"log": [list(event) for event in self._log],
                "open": [[str(arch), list(numbers)] for arch, numbers in self._open.items()]}

    def _load_strategy_state(self, state: dict) -> None:
        self._replay(state["log"])
        self._log = [list(event) for event in state["log"]]
        self._open = {self.space.parse(text): list(numbers) for text, numbers in state["open"]}
        self._trial = None

    def _replay(self, log: list[list[Any]]) -> None:
        """A fresh study with the seeded sampler, brought to where ``log`` left it."""
        self.study = self._new_study()
        for event in log:
            if event[0] == "ask":
                _, choices = self._ask_trial()
                if choices != list(event[1]):
                    raise ValueError(
                        f"{self.name}: replaying the saved trials gave different suggestions ({choices} instead of "
                        f"{event[1]} at trial {len(self.study.trials) - 1}); was the state saved with another "
                        f"Optuna version (this is {self._optuna.__version__})?")
            elif event[2] is None:
                self.study.tell(event[1], state=self._optuna.trial.TrialState.FAIL)
            else:
                self.study.tell(event[1], list(event[2]))

    # Ray Tune pickles the search algorithm with the Tuner. Optuna's own objects are not always
    # picklable (Optuna 5.1's NSGA-II sampler holds a thread lock), so a pickle carries the log and
    # unpickling replays it, as a restored checkpoint does.
    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        for key in ("study", "_optuna", "_trial"):
            state.pop(key)
        return state

    def __setstate__(self, state: dict) -> None:
        import optuna

        self.__dict__.update(state)
        self._optuna, self._trial = optuna, None
        self._replay(self._log)


@STRATEGIES.register("optuna-tpe")
class OptunaTPE(OptunaStrategy):
    """Optuna's Tree-structured Parzen Estimator (random for the first ``n_startup_trials``).

    ``multivariate`` None keeps Optuna 5's default: multivariate TPE for one objective, independent
    TPE for several."""

    name = "optuna-tpe"
    sampler_params = ("n_startup_trials", "multivariate")

    def __init__(self, space, *, n_startup_trials: int = 10, multivariate: bool | None = None, **common):
        self.n_startup_trials = check_int("n_startup_trials", n_startup_trials)
        if multivariate is not None and not isinstance(multivariate, bool):
            raise ValueError(f"multivariate must be true, false or null, got {multivariate!r}")
        self.multivariate = multivariate
        super().__init__(space, **common)

    def _sampler(self):
        return self._optuna.samplers.TPESampler(seed=self.seed, n_startup_trials=self.n_startup_trials,
                                                multivariate=self.multivariate)


@STRATEGIES.register("optuna-nsga2")
class OptunaNSGA2(OptunaStrategy):
    """Optuna's NSGA-II genetic algorithm (generations of ``population_size``). The default 5 (Optuna's
    own is 50) suits NAS budgets of tens to hundreds of evaluations: on NAS-Bench-201 a population of
    20 stayed at random search's level up to 50 evaluations, 5 was clearly above it from 50 on."""

    name = "optuna-nsga2"
    sampler_params = ("population_size",)

    def __init__(self, space, *, population_size: int = 5, **common):
        self.population_size = check_int("population_size", population_size, minimum=2)
        super().__init__(space, **common)

    def _sampler(self):
        return self._optuna.samplers.NSGAIISampler(seed=self.seed, population_size=self.population_size)
