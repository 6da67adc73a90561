"""Search strategies: ask/tell objects that propose architectures of a space and learn from results.

Registered names (the ``search.strategy`` key in YAML): ``random``, ``evolution`` (regularized
evolution), ``rl`` (REINFORCE), ``predictor`` (BANANAS-style MLP ensemble), ``optuna-tpe`` and
``optuna-nsga2``. Every one but ``predictor`` can screen its proposals with a :class:`Surrogate` of the
results (``screen``). :func:`run_searcher_benchmark` compares them on a tabular benchmark.
"""
from frugalnas.strategies.base import STRATEGIES, Strategy, make_strategy, strategy_parameters
from frugalnas.strategies.pareto import Objective, non_dominated, pareto_front, parse_objectives
from frugalnas.strategies.surrogate import Surrogate
from frugalnas.strategies.random_search import RandomSearch
from frugalnas.strategies.evolution import RegularizedEvolution
from frugalnas.strategies.reinforce import Reinforce
from frugalnas.strategies.predictor import PredictorSearch
from frugalnas.strategies.optuna_samplers import OptunaNSGA2, OptunaTPE
from frugalnas.strategies.benchmark import ENGINES, plot_curves, read_table, run_inprocess, run_searcher_benchmark

__all__ = [
    "STRATEGIES", "Strategy", "make_strategy", "strategy_parameters",
    "Objective", "non_dominated", "pareto_front", "parse_objectives", "Surrogate",
    "RandomSearch", "RegularizedEvolution", "Reinforce", "PredictorSearch", "OptunaTPE", "OptunaNSGA2",
    "ENGINES", "plot_curves", "read_table", "run_inprocess", "run_searcher_benchmark",
]
