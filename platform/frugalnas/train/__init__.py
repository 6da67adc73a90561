"""Training loops (plain PyTorch): candidate training with a selector, evaluation, fixed architectures."""
from frugalnas.train.classify import (
    EpochResult, SelectorTrainer, TrainSettings, evaluate, recalibrate_batchnorm, train_epoch, train_with_selector)
from frugalnas.train.models import BASELINES, build_arch

__all__ = ["BASELINES", "EpochResult", "SelectorTrainer", "recalibrate_batchnorm", "TrainSettings", "build_arch", "evaluate", "train_epoch", "train_with_selector"]
