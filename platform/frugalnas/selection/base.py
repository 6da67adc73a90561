"""The data-selection interface: which training images each epoch trains on, in which order.

A training loop drives any selector the same way::

    selector = make_selector("dds", train_ids, train_labels, subset_size=1000, index=index)
    for _ in range(epochs):
        plan = selector.next_epoch()
        if plan.train:
            ...train on plan.ids, in that order, collecting per-image confidence / correctness...
            selector.observe(ids, confidence, correct)

Policies register in :data:`SELECTORS` under the name used in YAML (``full``, ``stream``,
``random``, ``dynamic-random``, ``dds``, ...). Every selector is deterministic for its seed and can be checkpointed
with :meth:`Selector.state_dict` and resumed with :meth:`Selector.load_state_dict`.
"""
from __future__ import annotations

import copy
import hashlib
import inspect
import numbers
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from frugalnas.registry import Registry

SELECTORS: Registry[type["Selector"]] = Registry("selector")


@dataclass(eq=False)  # eq on numpy arrays is ambiguous; compare fields explicitly
class EpochPlan:
    """What one epoch does. ``ids`` is empty when ``train`` is False (a DDS update epoch)."""

    epoch: int
    train: bool  # False on a DDS update epoch (no training happens that epoch)
    ids: np.ndarray  # int64 image ids to train on, in curriculum order
    updated: bool  # True when this epoch re-formed the subset
    replaced: int  # how many images were swapped in (0 if none)


def make_selector(name: str, *args, **kwargs) -> "Selector":
    """Build the selector registered as ``name``; unknown names or parameters fail with the allowed
    ones listed (a misspelt YAML key must not be silently ignored)."""
    cls = SELECTORS.get(name)
    accepted = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise TypeError(
            f"selector {name!r} got unknown parameter(s) {', '.join(unknown)}; "
            f"allowed: {', '.join(accepted)}"
        )
    return cls(*args, **kwargs)


# ---------------------------------------------------------------- parameter checks


def check_fraction(name: str, value: Any) -> float:
    """A threshold in (0, 1]."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 < value <= 1:
        raise ValueError(f"{name} must be a number in (0, 1], got {value!r}")
    return float(value)


def check_int(name: str, value: Any, minimum: int = 0) -> int:
    """An integer >= ``minimum`` (bools and non-integral floats are refused)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_subset_size(subset_size: Any, n_images: int, n_classes: int) -> int:
    """A class-balanced subset needs at least one image per class and cannot exceed the data."""
    if subset_size is None:
        raise ValueError(
            f"subset_size is required for this policy (an integer between the number of classes, "
            f"{n_classes}, and the number of training images, {n_images})"
        )
    size = check_int("subset_size", subset_size, minimum=1)
    if size > n_images:
        raise ValueError(
            f"subset_size {size} is larger than the number of training images {n_images}"
        )
    if size < n_classes:
        raise ValueError(
            f"subset_size {size} is smaller than the number of classes {n_classes}: "
            "a class-balanced subset needs at least one image per class"
        )
    return size


def balanced_subset(
    ids: np.ndarray, labels: np.ndarray, size: int, rng: np.random.Generator
) -> np.ndarray:
    """A random subset of ``size`` ids whose per-class counts differ by at most one.

    A class smaller than its share gives all its images and the shortfall is spread over the other
    classes (water-filling), whose counts still differ by at most one. Which classes get the remainder's extra image is random too, so no class
    is favoured by its label. Returned in random order (so a loop that trains in this order does not
    see the classes one after another).
    """
    classes, counts = np.unique(labels, return_counts=True)
    check_subset_size(size, len(ids), len(classes))
    take = np.zeros(len(classes), dtype=np.int64)
    active = np.ones(len(classes), dtype=bool)
    remaining = size
    while active.any():  # classes that cannot fill an equal share give everything they have
        share = remaining // int(active.sum())
        small = active & (counts <= share)
        if not small.any():
            break
        take[small] = counts[small]
        remaining -= int(counts[small].sum())
        active &= ~small
    n_active = int(active.sum())
    if n_active:
        # every active class holds > share images, so each can also take the remainder's +1
        share, n_extra = divmod(remaining, n_active)
        take[active] = share
        take[rng.choice(np.flatnonzero(active), size=n_extra, replace=False)] += 1
    chosen = [
        rng.choice(ids[labels == c], size=int(k), replace=False) for c, k in zip(classes, take)
    ]
    return rng.permutation(np.concatenate(chosen)).astype(np.int64)


def preview(values, limit: int = 10) -> str:
    values = list(values)
    shown = ", ".join(str(v) for v in values[:limit])
    return f"[{shown}{', ...' if len(values) > limit else ''}] ({len(values)} in all)"


# ---------------------------------------------------------------- the interface


class Selector(ABC):
    """Plans each epoch's training ids and learns from the per-image results it is shown.

    ``train_ids`` (N,) unique ints and ``train_labels`` (N,) ints describe the whole training set.
    Subclasses implement :meth:`_plan_epoch` (and, if they hold state, :meth:`_policy_state` /
    :meth:`_load_policy_state`); bookkeeping, validation, history and checkpointing live here so
    every policy reports the same way.
    """

    name: ClassVar[str] = ""  # the registry name; set by each policy
    #: Inputs the policy needs beyond ids and labels, made once per dataset by the caller:
    #: "latents" (autoencoder embeddings, for a furthest-neighbour index), "entropy" (reference-model scores).
    needs: ClassVar[tuple[str, ...]] = ()
    #: Whether the policy learns from :meth:`observe`'s per-image results; a training loop may skip
    #: computing them (and count processed images itself) when it does not.
    uses_feedback: ClassVar[bool] = True

    def __init__(self, train_ids, train_labels, *, subset_size=None, seed=0):
        ids = np.asarray(train_ids)
        labels = np.asarray(train_labels)
        if ids.ndim != 1 or labels.ndim != 1 or len(ids) != len(labels) or len(ids) == 0:
            raise ValueError(
                f"train_ids {ids.shape} and train_labels {labels.shape} must be non-empty 1-D arrays "
                "of the same length"
            )
        for what, arr in (("train_ids", ids), ("train_labels", labels)):
            if not np.issubdtype(arr.dtype, np.integer):
                raise ValueError(f"{what} must be integers, got dtype {arr.dtype}")
        self.train_ids = ids.astype(np.int64)
        self.train_labels = labels.astype(np.int64)
        order = np.argsort(self.train_ids, kind="stable")
        self._sorted_ids = self.train_ids[order]
        self._sorted_labels = self.train_labels[order]
        dup = self._sorted_ids[1:][self._sorted_ids[1:] == self._sorted_ids[:-1]]
        if dup.size:
            raise ValueError(f"train_ids must be unique; repeated: {preview(np.unique(dup))}")
        self.classes = np.unique(self.train_labels)
        self.seed = check_int("seed", seed)
        self.subset_size = subset_size  # validated by the policies that use it
        self._rng = np.random.default_rng(self.seed)
        self._fingerprint = hashlib.sha256(
            self.train_ids.tobytes() + self.train_labels.tobytes()
        ).hexdigest()[:16]

        self._epoch = -1
        self._plan: EpochPlan | None = None
        self._plan_sorted = np.empty(0, dtype=np.int64)
        self._seen: dict[int, tuple[float, bool]] = {}  # this epoch's latest result per image
        self._n_correct = 0
        self._images_processed = 0
        self._subset_updates = 0
        self.history: list[dict] = []

    # ------------------------------------------------------------ what policies implement

    @abstractmethod
    def _plan_epoch(self, epoch: int) -> EpochPlan:
        """Decide epoch ``epoch`` (0-based): update the subset if due, and return the plan."""

    @property
    @abstractmethod
    def subset(self) -> np.ndarray:
        """The current subset's ids, ascending."""

    def params(self) -> dict:
        """The constructor parameters that define the policy (checked on resume)."""
        return {"seed": self.seed, "subset_size": self.subset_size}

    def _record_fields(self, plan: EpochPlan) -> dict:
        """Policy-specific fields of a new history record."""
        return {"n_easy": None, "mastery_threshold": None, "mastered": None}

    def _after_observe(self, ids: np.ndarray, confidence: np.ndarray, correct: np.ndarray, hardness=None) -> None:
        """React to a batch of results (the base already updated accuracy in history[-1])."""

    def _subset_record(self) -> list[int] | None:
        return self.subset.tolist()

    def _policy_state(self) -> dict:
        return {}

    def _load_policy_state(self, state: dict) -> None:
        pass

    # ------------------------------------------------------------ the public loop

    @property
    def epoch(self) -> int:
        """The epoch most recently planned by :meth:`next_epoch` (-1 before the first call)."""
        return self._epoch

    @property
    def plan(self) -> EpochPlan | None:
        """The plan of the current epoch (None before the first :meth:`next_epoch`)."""
        return self._plan

    @property
    def images_processed(self) -> int:
        """Images passed to :meth:`observe` so far, repeats included: the training cost."""
        return self._images_processed

    @property
    def subset_updates(self) -> int:
        """How many epochs re-formed the subset."""
        return self._subset_updates

    def next_epoch(self) -> EpochPlan:
        """Plan the next epoch; call once at the start of every epoch."""
        self._epoch += 1
        plan = self._plan_epoch(self._epoch)
        plan.ids = np.asarray(plan.ids, dtype=np.int64)
        self._plan = plan
        self._plan_sorted = np.sort(plan.ids)
        self._seen, self._n_correct = {}, 0
        if plan.updated:
            self._subset_updates += 1
        record = {
            "epoch": plan.epoch,
            "train": plan.train,
            "updated": plan.updated,
            "replaced": int(plan.replaced),
            "subset_size": len(self.subset),
            "train_accuracy": None,
            "n_observed": 0,
        }
        record.update(self._record_fields(plan))
        record["subset"] = self._subset_record()
        self.history.append(record)
        return plan

    def observe(self, ids, confidence, correct, *, hardness=None) -> None:
        """Record training results of this epoch: per image, the softmax confidence of the predicted
        class and whether the prediction was right. May be called once per batch; a repeated id
        keeps its latest result. Adds ``len(ids)`` to :attr:`images_processed`.

        ``hardness`` (per image, in [0, 1]) replaces the score a policy would derive from confidence
        and correctness, for tasks where it is not one prediction's (detection scores each image
        from all its objects; see :mod:`frugalnas.train.detect`)."""
        if self._plan is None:
            raise RuntimeError("observe() was called before the first next_epoch()")
        ids = np.asarray(ids)
        confidence = np.asarray(confidence, dtype=np.float64)
        correct = np.asarray(correct)
        if ids.ndim != 1 or confidence.shape != ids.shape or correct.shape != ids.shape:
            raise ValueError(
                f"ids {ids.shape}, confidence {confidence.shape} and correct {correct.shape} must be "
                "1-D arrays of the same length"
            )
        if ids.size and not np.issubdtype(ids.dtype, np.integer):
            raise ValueError(f"ids must be integers, got dtype {ids.dtype}")
        ids = ids.astype(np.int64)
        bad = ~(np.isfinite(confidence) & (confidence >= 0) & (confidence <= 1))
        if bad.any():
            raise ValueError(
                f"confidence must lie in [0, 1]; ids {preview(ids[bad])} have "
                f"{preview(confidence[bad])}"
            )
        if correct.dtype != np.bool_:
            if correct.size and not np.isin(correct, (0, 1)).all():
                raise ValueError(f"correct must be booleans (or 0/1), got {preview(np.unique(correct))}")
            correct = correct.astype(bool)
        if hardness is not None:
            hardness = np.asarray(hardness, dtype=np.float64)
            if hardness.shape != ids.shape or not (np.isfinite(hardness) & (hardness >= 0) & (hardness <= 1)).all():
                raise ValueError(f"hardness must be one number in [0, 1] per id, got {preview(hardness)}")
        if not ids.size:
            return
        plan = self._plan
        if not plan.train:
            raise ValueError(
                f"epoch {plan.epoch} is a subset-update epoch: nothing trains, so ids "
                f"{preview(ids)} are not in its plan"
            )
        pos = np.minimum(np.searchsorted(self._plan_sorted, ids), max(len(self._plan_sorted) - 1, 0))
        outside = ids[self._plan_sorted[pos] != ids] if len(self._plan_sorted) else ids
        if outside.size:
            raise ValueError(f"ids not in epoch {plan.epoch}'s plan: {preview(outside)}")

        for i, c, k in zip(ids.tolist(), confidence.tolist(), correct.tolist()):
            previous = self._seen.get(i)
            if previous is not None:
                self._n_correct -= previous[1]
            self._seen[i] = (c, k)
            self._n_correct += k
        self._images_processed += len(ids)
        record = self.history[-1]
        record["n_observed"] = len(self._seen)
        record["train_accuracy"] = self._n_correct / len(self._seen) if self._seen else None
        if hardness is None:
            self._after_observe(ids, confidence, correct)
        else:
            self._after_observe(ids, confidence, correct, hardness=hardness)

    # ------------------------------------------------------------ helpers for policies

    def labels_of(self, ids) -> np.ndarray:
        """Labels of training ids (KeyError naming any id that is not a training image)."""
        ids = np.asarray(ids, dtype=np.int64)
        pos = np.minimum(np.searchsorted(self._sorted_ids, ids), len(self._sorted_ids) - 1)
        unknown = ids[self._sorted_ids[pos] != ids]
        if unknown.size:
            raise KeyError(f"not training image ids: {preview(unknown)}")
        return self._sorted_labels[pos]

    def is_train_id(self, image_id: int) -> bool:
        pos = int(np.searchsorted(self._sorted_ids, image_id))
        return pos < len(self._sorted_ids) and int(self._sorted_ids[pos]) == int(image_id)

    # ------------------------------------------------------------ checkpointing

    def state_dict(self) -> dict:
        """Everything needed to continue exactly where this selector is; only JSON types."""
        plan = self._plan
        return {
            "policy": self.name,
            "params": self.params(),
            "train_fingerprint": self._fingerprint,
            "rng": copy.deepcopy(self._rng.bit_generator.state),
            "epoch": self._epoch,
            "plan": None
            if plan is None
            else {
                "epoch": plan.epoch,
                "train": plan.train,
                "ids": plan.ids.tolist(),
                "updated": plan.updated,
                "replaced": int(plan.replaced),
            },
            "seen": [[i, c, k] for i, (c, k) in self._seen.items()],
            "images_processed": self._images_processed,
            "subset_updates": self._subset_updates,
            "history": copy.deepcopy(self.history),
            "policy_state": copy.deepcopy(self._policy_state()),
        }

    def load_state_dict(self, state: dict) -> None:
        """Continue from ``state``; this selector must be built with the same data and parameters."""
        if state.get("policy") != self.name:
            raise ValueError(
                f"state is from selector {state.get('policy')!r}, cannot load it into {self.name!r}"
            )
        if state["train_fingerprint"] != self._fingerprint:
            raise ValueError(
                "state was saved for a different training set (ids/labels fingerprint "
                f"{state['train_fingerprint']} != {self._fingerprint})"
            )
        mine = self.params()
        for key, value in state["params"].items():
            if mine.get(key) != value:
                raise ValueError(
                    f"state was saved with {key}={value!r} but this selector has "
                    f"{key}={mine.get(key)!r}; build it with the saved parameters to resume"
                )
        self._rng.bit_generator.state = copy.deepcopy(state["rng"])
        self._epoch = int(state["epoch"])
        p = state["plan"]
        if p is None:
            self._plan = None
        else:
            self._plan = EpochPlan(
                int(p["epoch"]), bool(p["train"]), np.asarray(p["ids"], dtype=np.int64),
                bool(p["updated"]), int(p["replaced"]),
            )
        self._plan_sorted = np.sort(self._plan.ids) if self._plan else np.empty(0, dtype=np.int64)
        self._seen = {int(i): (float(c), bool(k)) for i, c, k in state["seen"]}
        self._n_correct = sum(k for _, k in self._seen.values())
        self._images_processed = int(state["images_processed"])
        self._subset_updates = int(state["subset_updates"])
        self.history = copy.deepcopy(state["history"])
        self._load_policy_state(state["policy_state"])

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self.params().items())
        return f"{type(self).__name__}({params})"
