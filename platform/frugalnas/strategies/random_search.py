"""Random search: uniform sampling without replacement, the baseline every strategy must beat."""
from __future__ import annotations

from frugalnas.spaces.base import Arch
from frugalnas.strategies.base import STRATEGIES, Strategy


@STRATEGIES.register("random")
class RandomSearch(Strategy):
    """Each proposal is uniform over the architectures not yet proposed (nor rejected), so a run
    never evaluates one twice and ends (``ask() -> None``) when the space is exhausted."""

    name = "random"

    def _propose(self) -> Arch | None:
        return self._sample_unseen()
