"""The DDS-NAS loop shared by ``dds`` and ``dynamic-random``: hardness, mastery, update epochs.

Only the choice of the image that replaces an easy one differs between the two policies (furthest
latent neighbour versus a random same-class image), so that is the one overridable method,
:meth:`DynamicSelector.replacement`. Keeping everything else identical is what makes
``dynamic-random`` a fair control for the value of the furthest-neighbour choice.
"""
from __future__ import annotations

from abc import abstractmethod

import numpy as np

from frugalnas.selection.base import (
    EpochPlan,
    Selector,
    balanced_subset,
    check_fraction,
    check_int,
    check_subset_size,
)

#: Growth of the mastery threshold per curriculum stage: m_i = m0 * (1 + 0.35 i), capped at 1.
CURRICULUM_GROWTH = 0.35
#: Bins of the per-epoch hardness histogram of the subset kept in the history (for plots).
HARDNESS_BINS = 10
#: A wrong prediction's confidence counts this much towards hardness (so wrong = hard).
WRONG_WEIGHT = 0.1
#: Training orders of the subset: strictly easiest first (the published curriculum), the curriculum cut
#: into CURRICULUM_BLOCKS blocks each shuffled (easiest block first), or a fresh random order.
ORDERS = ("curriculum", "blocks", "shuffled")
CURRICULUM_BLOCKS = 4
#: What decides mastery: training accuracy on the subset (the papers), or the fraction of the subset
#: that is easy (the thesis's variant).
MASTERY_RULES = ("accuracy", "easy-fraction")


def hardness_scores(confidence: np.ndarray, correct: np.ndarray) -> np.ndarray:
    """DDS-NAS hardness h = confidence * (1.0 if correct else 0.1); low h = hard."""
    return np.asarray(confidence, dtype=np.float64) * np.where(correct, 1.0, WRONG_WEIGHT)


def finite_or_none(x: float) -> float | None:
    """History records hold only JSON values: an undefined threshold (nothing scored yet) is None."""
    return float(x) if np.isfinite(x) else None


class DynamicSelector(Selector):
    """A class-balanced subset that is re-formed whenever the model has mastered it.

    After each training epoch every observed image gets a hardness h (:func:`hardness_scores`); it is
    *easy* when h > the easy threshold: ``hardness`` (fixed), or with ``easy_quantile`` = q the q-th
    quantile of the scored subset's hardness (adaptive: about the easiest 1 - q of the subset, however
    confident the model is). The epoch is *mastered* when, by ``mastery_rule``, the training accuracy
    on the subset (fraction correct among observed ids; ``accuracy``, the papers' rule) or the fraction
    of the subset that is easy (``easy-fraction``, the thesis's variant) reaches the mastery threshold.
    Epoch e is an *update epoch* when e >= ``warmup_epochs`` (epochs 0 .. warmup_epochs-1 always train)
    and epoch e-1 trained and mastered the subset. An update epoch trains nothing: each easy image, in
    ascending id order, is replaced by :meth:`replacement` (kept when that returns None); hard images
    stay. The epoch after an update always trains. An update that would swap nothing (no easy image,
    or no replacement found) is no update: that epoch trains instead (``noop_update`` in its history
    record), so it costs neither an epoch nor a learning-rate restart.

    Training order (``order``): ``curriculum``, easiest first by most recent hardness (ties by id),
    then the images never scored yet, in the order they joined the subset; ``blocks``, that order cut
    into CURRICULUM_BLOCKS equal blocks, each shuffled (seeded); ``shuffled``, a fresh seeded
    permutation each epoch. An image that leaves the subset forgets its score (it came from a model
    state that no longer exists).

    ``curriculum_stages`` > 0 raises the mastery threshold in stages over ``total_epochs``:
    stage i = floor(epoch * stages / total_epochs) (capped at the last stage) and
    threshold m_i = mastery * (1 + 0.35 i), capped at 1.0.
    """

    def __init__(
        self,
        train_ids,
        train_labels,
        *,
        subset_size=None,
        seed=0,
        hardness=0.9,
        mastery=0.6,
        warmup_epochs=5,
        curriculum_stages=0,
        total_epochs=None,
        order="curriculum",
        easy_quantile=None,
        mastery_rule="accuracy",
    ):
        super().__init__(train_ids, train_labels, subset_size=subset_size, seed=seed)
        self.subset_size = check_subset_size(subset_size, len(self.train_ids), len(self.classes))
        self.hardness = check_fraction("hardness", hardness)
        self.mastery = check_fraction("mastery", mastery)
        if order not in ORDERS:
            raise ValueError(f"order must be one of {', '.join(ORDERS)}, got {order!r}")
        self.order = order
        if easy_quantile is not None:
            easy_quantile = check_fraction("easy_quantile", easy_quantile)
            if easy_quantile >= 1:
                raise ValueError("easy_quantile must be below 1 (1 would make no image easy), got 1")
        self.easy_quantile = easy_quantile
        if mastery_rule not in MASTERY_RULES:
            raise ValueError(f"mastery_rule must be one of {', '.join(MASTERY_RULES)}, got {mastery_rule!r}")
        if mastery_rule == "easy-fraction" and easy_quantile is not None:
            raise ValueError("mastery_rule='easy-fraction' needs the fixed easy threshold: with easy_quantile "
                             "the easy fraction is about 1 - easy_quantile whatever the model has learnt")
        self.mastery_rule = mastery_rule
        self.warmup_epochs = check_int("warmup_epochs", warmup_epochs)
        self.curriculum_stages = check_int("curriculum_stages", curriculum_stages)
        if self.curriculum_stages > 0:
            if total_epochs is None:
                raise ValueError(
                    f"curriculum_stages={self.curriculum_stages} needs total_epochs (an integer "
                    ">= 1) to place the stages; pass curriculum_stages=0 for a fixed threshold"
                )
            total_epochs = check_int("total_epochs", total_epochs, minimum=1)
        elif total_epochs is not None:
            total_epochs = check_int("total_epochs", total_epochs, minimum=1)
        self.total_epochs = total_epochs

        # members in the order they joined (a dict keeps insertion order and gives O(1) membership)
        initial = balanced_subset(self.train_ids, self.train_labels, self.subset_size, self._rng)
        self._members: dict[int, None] = dict.fromkeys(initial.tolist())
        self._scores: dict[int, float] = {}  # most recent hardness of members
        self._class_ids = {
            int(c): self._sorted_ids[self._sorted_labels == c] for c in self.classes
        }  # ascending ids per class, for replacement rules
        self._last_update: dict = {}  # what _update did, for the epoch's history record

    # ------------------------------------------------------------ the one policy hook

    @abstractmethod
    def replacement(self, easy_id: int, exclude: set[int]) -> int | None:
        """The training image of ``easy_id``'s class, not in ``exclude``, that should replace it;
        None to keep ``easy_id``. ``exclude`` holds the subset and the replacements chosen so far
        in this update."""

    # ------------------------------------------------------------ schedule

    def params(self) -> dict:
        return {
            "seed": self.seed,
            "subset_size": self.subset_size,
            "hardness": self.hardness,
            "mastery": self.mastery,
            "warmup_epochs": self.warmup_epochs,
            "curriculum_stages": self.curriculum_stages,
            "total_epochs": self.total_epochs,
            "order": self.order,
            "easy_quantile": self.easy_quantile,
            "mastery_rule": self.mastery_rule,
        }

    def mastery_threshold(self, epoch: int) -> float:
        """The training accuracy epoch ``epoch`` must reach to count as mastered."""
        if self.curriculum_stages == 0:
            return self.mastery
        stage = min(epoch * self.curriculum_stages // self.total_epochs, self.curriculum_stages - 1)
        return min(1.0, self.mastery * (1 + CURRICULUM_GROWTH * stage))

    @property
    def subset(self) -> np.ndarray:
        return np.sort(np.fromiter(self._members, dtype=np.int64, count=len(self._members)))

    def scores(self) -> dict[int, float]:
        """Most recent hardness of each scored member (a copy)."""
        return dict(self._scores)

    def _is_update_epoch(self) -> bool:
        if not self.history:
            return False
        previous = self.history[-1]
        return bool(
            previous["train"]
            and previous["epoch"] + 1 >= self.warmup_epochs
            and previous["mastered"]
        )

    def _plan_epoch(self, epoch: int) -> EpochPlan:
        self._last_update = {}
        if self._is_update_epoch():
            plan = self._update(epoch)
            if plan.replaced:
                return plan
            self._last_update = {"noop": True}  # nothing to swap: train this epoch instead
        return EpochPlan(epoch, True, self._training_order(), False, 0)

    def _curriculum_order(self) -> np.ndarray:
        scored = sorted((i for i in self._members if i in self._scores),
                        key=lambda i: (-self._scores[i], i))
        unscored = [i for i in self._members if i not in self._scores]
        return np.asarray(scored + unscored, dtype=np.int64)

    def _training_order(self) -> np.ndarray:
        order = self._curriculum_order()
        if self.order == "shuffled":
            return self._rng.permutation(order)
        if self.order == "blocks":
            return np.concatenate([self._rng.permutation(b) for b in np.array_split(order, CURRICULUM_BLOCKS)])
        return order

    def easy_threshold(self) -> float:
        """Hardness above which an image is easy now: ``hardness``, or the ``easy_quantile`` of the
        scored subset's hardness (infinite while nothing is scored)."""
        if self.easy_quantile is None:
            return self.hardness
        scored = [self._scores[i] for i in self._members if i in self._scores]
        return float(np.quantile(scored, self.easy_quantile)) if scored else float("inf")

    def _easy(self) -> list[int]:
        threshold = self.easy_threshold()
        return sorted(i for i in self._members if self._scores.get(i, 0.0) > threshold)

    def _update(self, epoch: int) -> EpochPlan:
        threshold = self.easy_threshold()
        easy = self._easy()
        exclude = set(self._members)
        swaps: list[tuple[int, int]] = []
        for old in easy:  # ascending id: a deterministic order, since each choice narrows the next
            new = self.replacement(old, exclude)
            if new is None:
                continue
            new = int(new)
            self._check_replacement(old, new, exclude)
            exclude.add(new)
            swaps.append((old, new))
        for old, _ in swaps:
            del self._members[old]
            self._scores.pop(old, None)
        # join in a seeded random order: ids (and so the easy images) may be grouped by class, and
        # the newcomers are trained last, in joining order
        for k in self._rng.permutation(len(swaps)):
            self._members[swaps[k][1]] = None
        self._last_update = {"n_easy": len(easy), "easy_threshold": finite_or_none(threshold), "swaps": [list(s) for s in swaps]}
        return EpochPlan(epoch, False, np.empty(0, dtype=np.int64), True, len(swaps))

    def _check_replacement(self, old: int, new: int, exclude: set[int]) -> None:
        # a faulty index must not silently break class balance or duplicate an image
        if not self.is_train_id(new):
            raise RuntimeError(f"{self.name}: replacement {new} for image {old} is not a training image")
        if new in exclude:
            raise RuntimeError(
                f"{self.name}: replacement {new} for image {old} is already in the subset or "
                "already chosen in this update"
            )
        old_label, new_label = self.labels_of([old, new]).tolist()
        if old_label != new_label:
            raise RuntimeError(
                f"{self.name}: replacement {new} (class {new_label}) for image {old} "
                f"(class {old_label}) is not of the same class"
            )

    # ------------------------------------------------------------ bookkeeping

    def _record_fields(self, plan: EpochPlan) -> dict:
        noop = bool(self._last_update.get("noop"))
        if plan.train:
            return {
                "n_easy": len(self._easy()),
                "easy_threshold": finite_or_none(self.easy_threshold()),
                "mastery_threshold": self.mastery_threshold(plan.epoch),
                "mastered": None,  # known once results arrive
                "swaps": [],
                "noop_update": noop,
            }
        return {
            "n_easy": self._last_update["n_easy"],
            "easy_threshold": self._last_update["easy_threshold"],
            "mastery_threshold": None,
            "mastered": None,
            "swaps": self._last_update["swaps"],
            "noop_update": False,
        }

    def _after_observe(self, ids, confidence, correct, hardness=None) -> None:
        if hardness is None:
            hardness = hardness_scores(confidence, correct)
        for i, h in zip(ids.tolist(), np.asarray(hardness).tolist()):
            self._scores[i] = h
        record = self.history[-1]
        epoch_done = record["n_observed"] == len(self._plan_sorted)
        if epoch_done:  # the epoch's last batch: once per epoch, since these scan the whole subset
            scored = [self._scores[i] for i in self._members if i in self._scores]
            record["hardness_histogram"] = np.histogram(scored, bins=HARDNESS_BINS, range=(0.0, 1.0))[0].tolist()
            record["easy_threshold"] = finite_or_none(self.easy_threshold())
            record["n_easy"] = len(self._easy())
        if self.mastery_rule == "accuracy":
            record["mastered"] = (
                record["train_accuracy"] is not None
                and record["train_accuracy"] >= record["mastery_threshold"]
            )
        elif epoch_done:  # easy-fraction: judged on the whole epoch's scores
            record["mastered"] = record["n_easy"] / len(self._members) >= record["mastery_threshold"]

    def _policy_state(self) -> dict:
        return {
            "members": list(self._members),
            "scores": [[i, h] for i, h in self._scores.items()],
        }

    def _load_policy_state(self, state: dict) -> None:
        self._members = dict.fromkeys(int(i) for i in state["members"])
        self._scores = {int(i): float(h) for i, h in state["scores"]}
