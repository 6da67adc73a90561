"""Fixed architectures by name: ``SPACE:ARCH`` strings for ``frugalnas train --arch``.

``baseline:cnn`` is a small built-in CNN; any search space's canonical string works too
(``nb201:|nor_conv_3x3~0|+|...|``), built by that space.
"""
from __future__ import annotations

from typing import Callable

import torch.nn as nn

from frugalnas.errors import ConfigError
from frugalnas.registry import Registry

BASELINES: Registry[Callable[[int, int], nn.Module]] = Registry("baseline architecture")


@BASELINES.register("cnn")
def small_cnn(num_classes: int, in_channels: int) -> nn.Module:
    """Two conv blocks and a linear classifier: a fast reference that works from 8x8 pixels up."""

    def block(cin, cout):
        return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))

    return nn.Sequential(
        block(in_channels, 32), block(32, 32), nn.MaxPool2d(2),
        block(32, 64), block(64, 64), nn.AdaptiveAvgPool2d(1),
        nn.Flatten(), nn.Linear(64, num_classes),
    )


def build_arch(spec: str, num_classes: int, in_channels: int) -> tuple[nn.Module, str]:
    """(a freshly initialised network, its canonical ``space:arch`` name) for ``SPACE:ARCH``."""
    space_name, sep, arch_text = spec.partition(":")
    if not sep or not arch_text:
        raise ConfigError(f"--arch {spec!r}: expected SPACE:ARCH, e.g. baseline:cnn or nb201:|nor_conv_3x3~0|+|...|")
    if space_name == "baseline":
        return BASELINES.get(arch_text)(num_classes, in_channels), spec
    from frugalnas.spaces import load_space

    space = load_space(space_name)
    if space.task != "classification":
        raise ConfigError(f"--arch {spec!r}: the {space.family!r} space builds {space.task} networks; this trains "
                          "classifiers (search detectors with `frugalnas run` on a detection data set)")
    try:
        arch = space.parse(arch_text)
    except ValueError as error:
        raise ConfigError(f"--arch {spec!r}: {error}") from None
    return space.build(arch, num_classes, in_channels), f"{space_name}:{arch}"
