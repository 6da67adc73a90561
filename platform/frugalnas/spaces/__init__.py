"""Search spaces: the sets of architectures a search chooses from.

One module per family, selected by the ``family:`` key of a YAML file in ``search_spaces/``:
``nb201`` (NAS-Bench-201 cells), ``darts`` (DARTS cells), ``mobilenet`` (MobileNetV2-style macro
space), ``categorical`` (any space of named categorical decisions, declared in YAML alone), ``yolo``
(YOLO detectors, as ultralytics model YAMLs). Every family implements :class:`Space`; the cell
families also offer a weight-sharing supernet (:class:`CellSpace`) for gradient-based search.
"""
from frugalnas.spaces.base import SPACE_FAMILIES, Arch, CellSpace, Space, count_flops, count_params
from frugalnas.spaces.categorical import CategoricalArch, CategoricalSpace
from frugalnas.spaces.darts import DartsSpace, Genotype
from frugalnas.spaces.loader import SPACES_DIR, builtin_spaces, load_space, space_from_dict
from frugalnas.spaces.mobilenet import MobileNetArch, MobileNetSpace, StageArch
from frugalnas.spaces.nb201 import NB201Arch, NB201Space
from frugalnas.spaces.yolo import YoloArch, YoloSpace, YoloStage
from frugalnas.spaces.ops import Supernet

__all__ = [
    "SPACES_DIR",
    "SPACE_FAMILIES",
    "Arch",
    "CategoricalArch",
    "CategoricalSpace",
    "CellSpace",
    "DartsSpace",
    "Genotype",
    "MobileNetArch",
    "MobileNetSpace",
    "NB201Arch",
    "NB201Space",
    "Space",
    "StageArch",
    "Supernet",
    "YoloArch",
    "YoloSpace",
    "YoloStage",
    "builtin_spaces",
    "count_flops",
    "count_params",
    "load_space",
    "space_from_dict",
]
