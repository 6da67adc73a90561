"""Objectives (which metrics to maximise or minimise) and Pareto fronts over told results.

An objective is written as a metric name to maximise (``"accuracy"``) or a metric name with a
leading ``-`` to minimise (``"-params"``): ``["accuracy", "-params"]``. The same list is used in
the experiment YAML (``search.objectives``), by every strategy, and here.
"""
from __future__ import annotations

import math
import numbers
import re
from typing import Any, Hashable, Iterable, Mapping, NamedTuple, Sequence

import numpy as np

_METRIC = re.compile(r"^[A-Za-z_][A-Za-z0-9_.:/]*$")
_FORMAT = "write 'name' to maximise a metric or '-name' to minimise it, e.g. ['accuracy', '-params']"


class Objective(NamedTuple):
    """One objective: a metric name and whether it is maximised (``sign`` +1) or minimised (-1)."""

    name: str
    direction: str  # "max" or "min"

    @property
    def sign(self) -> float:
        return 1.0 if self.direction == "max" else -1.0

    def __str__(self) -> str:
        return self.name if self.direction == "max" else f"-{self.name}"


def parse_objectives(objectives: str | Sequence[str]) -> tuple[Objective, ...]:
    """``["accuracy", "-params"]`` -> (Objective("accuracy", "max"), Objective("params", "min")).

    A single string is one objective. Anything else (tuples, empty names, repeats) is a ValueError
    that shows the format.
    """
    if isinstance(objectives, str):
        objectives = [objectives]
    if isinstance(objectives, Objective):
        objectives = [str(objectives)]
    try:
        items = list(objectives)
    except TypeError:
        raise ValueError(f"objectives must be a list of metric names, got {objectives!r}; {_FORMAT}") from None
    if not items:
        raise ValueError(f"objectives must name at least one metric; {_FORMAT}")
    parsed = []
    for item in items:
        if isinstance(item, Objective):
            item = str(item)
        if not isinstance(item, str):
            raise ValueError(f"objective {item!r} is not a string; {_FORMAT}")
        text = item.strip()
        direction = "min" if text.startswith("-") else "max"
        name = text[1:] if text[:1] in "+-" and text else text
        if not _METRIC.match(name):
            raise ValueError(f"objective {item!r} is not a metric name (letters, digits, _ . : /); {_FORMAT}")
        parsed.append(Objective(name, direction))
    names = [o.name for o in parsed]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"objectives name metric(s) {', '.join(repeated)} more than once: {items!r}")
    return tuple(parsed)


def objective_values(result: Any, objectives: Sequence[Objective], where: str = "result") -> list[float]:
    """The objective metrics of ``result`` as floats, or a ValueError naming the missing or bad one
    and the metrics the result does have."""
    if not isinstance(result, Mapping):
        raise ValueError(f"{where} must be a mapping of metric names to numbers, got {type(result).__name__}")
    values = []
    for objective in objectives:
        if objective.name not in result:
            raise ValueError(f"{where} has no objective metric {objective.name!r}; it has: "
                             f"{', '.join(sorted(map(str, result))) or 'nothing'}")
        value = result[objective.name]
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
            raise ValueError(f"{where}: objective metric {objective.name!r} must be a finite number, got {value!r}")
        values.append(float(value))
    return values


def check_result(result: Any, objectives: Sequence[Objective], where: str = "result") -> dict:
    """``result`` as a plain JSON-able dict (numbers as int/float), checked to hold every objective
    metric as a finite number; a ValueError names the culprit."""
    objective_values(result, objectives, where)
    clean = {}
    for key, value in result.items():
        if isinstance(value, bool) or value is None or isinstance(value, str):
            clean[str(key)] = value
        elif isinstance(value, numbers.Integral):
            clean[str(key)] = int(value)
        elif isinstance(value, numbers.Real):
            clean[str(key)] = float(value)
        else:
            raise ValueError(f"{where}: metric {key!r} has a {type(value).__name__} value {value!r}; "
                             "allowed: numbers, strings, booleans, None")
    return clean


def non_dominated(points: np.ndarray) -> np.ndarray:
    """Boolean mask of the rows of ``points`` (n, k; every column maximised) that no other row
    dominates (>= in every column and > in at least one). Equal rows are all kept."""
    points = np.asarray(points, dtype=np.float64)
    if points.ndim != 2:
        raise ValueError(f"points must be a 2-D array (n, objectives), got shape {points.shape}")
    geq = (points[:, None, :] >= points[None, :, :]).all(axis=2)  # geq[i, j]: i >= j everywhere
    gt = (points[:, None, :] > points[None, :, :]).any(axis=2)
    dominated = (geq & gt).any(axis=0)  # some i dominates j
    return ~dominated


def pareto_front(told: Iterable[tuple[Hashable, Mapping[str, Any]]],
                 objectives: str | Sequence[str]) -> list[tuple[Hashable, dict]]:
    """The non-dominated ``(arch, result)`` pairs of ``told`` under ``objectives``, in told order.

    Only the objective metrics are read (a result may hold anything else, e.g. a Tune result). An
    architecture told more than once counts with its latest result. Results lacking an objective
    metric are a ValueError naming it.
    """
    objectives = parse_objectives(objectives)
    latest: dict = {}
    for arch, result in told:
        objective_values(result, objectives, where=f"result of {arch}")
        latest.pop(arch, None)  # re-insert so told order follows the latest result
        latest[arch] = result
    if not latest:
        return []
    items = list(latest.items())
    points = np.array([[o.sign * float(r[o.name]) for o in objectives] for _, r in items])
    return [item for item, keep in zip(items, non_dominated(points)) if keep]
