"""Regularized (aging) evolution, Real et al., "Regularized Evolution for Image Classifier
Architecture Search" (AAAI 2019), the REA baseline of NAS-Bench-101/201.

The population is the ``population_size`` most recently told results: when a new result arrives the
oldest dies, whatever its fitness (aging regularizes: an architecture survives only by having good
descendants). The first ``population_size`` proposals are random; afterwards each proposal samples
``sample_size`` members, takes the best by the first objective and mutates one decision.

Defaults (population 10, tournament over all 10) are tuned for the budgets NAS can afford per
search, tens to a few hundred evaluations: Real et al.'s 100/25 spend the first hundred evaluations
on random samples. With a small population evolution starts after ten, and selecting the best of
the living population makes each proposal a mutation of the best recent architecture; aging still
retires it after ten more results, so the search keeps moving. On NAS-Bench-201 this gives +0.4 to
+1.3 points at 25 evaluations over population 20 / tournament 5 on all three datasets, and no loss
at 150 (benchmarks/RESULTS.md).

With surrogate screening (``screen``, 16 by default; see :class:`~frugalnas.strategies.base.Strategy`) each
proposal is the surrogate's pick among 16 mutants of the parent (or, during the random start, among 16
random architectures, once ``screen_after`` results are known): neural-predictor-guided evolution (NPENAS,
Wei et al., IEEE TNNLS 2022).
"""
from __future__ import annotations

from frugalnas.spaces.base import Arch
from frugalnas.strategies.base import STRATEGIES, Strategy, check_int


@STRATEGIES.register("evolution")
class RegularizedEvolution(Strategy):
    """Aging evolution. A child that was already evaluated (or is pending or infeasible) is mutated
    again, so a run never proposes an architecture twice."""

    name = "evolution"
    default_screen = 16  # the surrogate picks each proposal from 16 of its own (see Strategy)

    def __init__(self, space, *, population_size: int = 10, sample_size: int | None = None, **common):
        super().__init__(space, **common)
        self.population_size = check_int("population_size", population_size, minimum=1)
        # None: the whole population, so setting population_size alone keeps the tournament over all of it
        self.sample_size = self.population_size if sample_size is None else check_int("sample_size", sample_size,
                                                                                        minimum=1)
        if self.sample_size > self.population_size:
            raise ValueError(f"sample_size ({sample_size}) must not exceed population_size ({population_size})")

    def params(self) -> dict:
        return {**super().params(), "population_size": self.population_size, "sample_size": self.sample_size}

    @property
    def population(self) -> list[tuple[Arch, dict]]:
        """The living members, oldest first: the last ``population_size`` told results."""
        return self.history[-self.population_size:]

    def _propose(self) -> Arch | None:
        population = self.population
        if self.asked < self.population_size or not population:
            return self._sample_unseen()
        picks = self.rng.choice(len(population), size=min(self.sample_size, len(population)), replace=False)
        # max keeps the first of equal scores, and picks are in random order: ties break at random
        parent, _ = max((population[i] for i in picks), key=lambda member: self.score(member[1]))
        return self._mutate_unseen(parent)
