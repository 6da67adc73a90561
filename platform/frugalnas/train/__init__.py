"""Training loops (plain PyTorch): candidate training with a selector, evaluation, fixed architectures."""
from frugalnas.train.classify import (
    EpochResult, SelectorTrainer, TrainSettings, evaluate, recalibrate_batchnorm, train_epoch, train_with_selector)
from frugalnas.train.darts import DartsSearch, DartsSettings, arch_step, bilevel_split, make_darts_search, weight_step
from frugalnas.train.models import BASELINES, build_arch

__all__ = ["DartsSearch", "DartsSettings", "arch_step", "bilevel_split", "make_darts_search", "weight_step",
           "BASELINES", "EpochResult", "SelectorTrainer", "recalibrate_batchnorm", "TrainSettings", "build_arch", "evaluate", "train_epoch", "train_with_selector"]
