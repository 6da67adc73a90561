"""Data selection: which training images each epoch trains on (full, stream, random, DDS, ...)."""
from frugalnas.selection.furthest import FURTHEST_INDEXES, ExactFurthest, FurthestIndex
from frugalnas.selection.base import SELECTORS, EpochPlan, Selector, make_selector
from frugalnas.selection.dynamic import DynamicSelector
from frugalnas.selection.full import FullData
from frugalnas.selection.random_subset import RandomSubset
from frugalnas.selection.dynamic_random import DynamicRandomSelector
from frugalnas.selection.dds import DDSSelector
from frugalnas.selection.dds_coverage import CoverageDDSSelector
from frugalnas.selection.stream import StreamSelector
from frugalnas.selection.entropy import EntropySubset, load_entropy_scores, save_entropy_scores

__all__ = ["FURTHEST_INDEXES", "ExactFurthest", "FurthestIndex"]
__all__ += [
    "SELECTORS", "EpochPlan", "Selector", "make_selector", "DynamicSelector",
    "FullData", "RandomSubset", "DynamicRandomSelector", "DDSSelector", "CoverageDDSSelector", "StreamSelector",
    "EntropySubset", "load_entropy_scores", "save_entropy_scores",
]
from frugalnas.selection.kdtree import KDTreeFurthest  # noqa: E402  (registers "kdtree")
__all__ += ["KDTreeFurthest"]
