"""``stream``: the whole training split as one shuffled stream, the fair baseline for any subset.

EcoNAS (Zhou et al. CVPR'20) found that at the same number of training iterations, more distinct
images for fewer epochs rank architectures better than a small subset trained for longer. So a
subset selector (random, entropy, dynamic-random, dds) earns its place only if it beats a stream of
the full training set cut at the same number of images: train it with an image budget
(``TrainSettings.images_budget``) and compare at equal images processed.
"""
from __future__ import annotations

import copy

import numpy as np

from frugalnas.selection.base import SELECTORS, EpochPlan, Selector, check_int


@SELECTORS.register("stream")
class StreamSelector(Selector):
    """Streams the training split in passes: each pass is a fresh seeded permutation of every training
    image, so no image repeats before all have been seen. Each epoch takes the next ``subset_size``
    images of the stream, running on into the next pass when the current one ends (an epoch that
    straddles two passes can hold an image twice: once at the end of one pass, once at the start of
    the next). ``subset_size`` None: each epoch is one whole pass (then it trains like ``full``).

    ``subset_size`` only sets the epoch's length (how often a training loop evaluates, checkpoints or
    reports), not which images are trained: the stream is the same for any ``subset_size`` with the
    same seed. Cut it with an image budget in the training loop. Not class-balanced: a pass is.
    """

    name = "stream"
    uses_feedback = False

    def __init__(self, train_ids, train_labels, *, subset_size=None, seed=0):
        super().__init__(train_ids, train_labels, subset_size=subset_size, seed=seed)
        if subset_size is not None:
            self.subset_size = check_int("subset_size", subset_size, minimum=1)
            if self.subset_size > len(self.train_ids):
                raise ValueError(f"subset_size {self.subset_size} (images per epoch) is larger than the number of "
                                 f"training images {len(self.train_ids)}; use None for one whole pass per epoch")
        self.passes = 0  # passes started before the current one
        self._new_pass()

    def _new_pass(self) -> None:
        # the state before the draw is kept so that a checkpoint holds a generator state, not N ids
        self._pass_rng = copy.deepcopy(self._rng.bit_generator.state)
        self._pass = self._rng.permutation(self.train_ids)
        self._position = 0

    @property
    def epoch_size(self) -> int:
        return self.subset_size or len(self.train_ids)

    @property
    def subset(self) -> np.ndarray:
        """The current epoch's ids (before the first epoch: the first epoch's), ascending."""
        if self._plan is None:
            return np.sort(self._pass[: self.epoch_size])
        return np.unique(self._plan.ids)

    def _subset_record(self) -> None:
        return None  # the plan is the stream's next stretch; not worth its ids in every history record

    def _record_fields(self, plan: EpochPlan) -> dict:
        return {**super()._record_fields(plan), "stream_pass": self.passes, "pass_position": self._position}

    def _plan_epoch(self, epoch: int) -> EpochPlan:
        chunks, need = [], self.epoch_size
        while need:
            if self._position == len(self._pass):
                self.passes += 1
                self._new_pass()
            chunk = self._pass[self._position : self._position + need]
            self._position += len(chunk)
            need -= len(chunk)
            chunks.append(chunk)
        return EpochPlan(epoch, True, np.concatenate(chunks), False, 0)

    def _policy_state(self) -> dict:
        return {"passes": self.passes, "position": self._position, "pass_rng": copy.deepcopy(self._pass_rng)}

    def _load_policy_state(self, state: dict) -> None:
        self.passes, self._position = int(state["passes"]), int(state["position"])
        self._pass_rng = copy.deepcopy(state["pass_rng"])
        generator = np.random.default_rng()
        generator.bit_generator.state = copy.deepcopy(self._pass_rng)
        self._pass = generator.permutation(self.train_ids)
