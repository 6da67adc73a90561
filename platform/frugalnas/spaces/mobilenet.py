"""A macro space over MobileNetV2-style networks (Sandler et al., 2018), as in ProxylessNAS/OFA.

The skeleton (stem, a fixed expansion-1 block, a list of stages with output channels and stride,
a 1x1 head conv) comes from the YAML; the search picks, per stage, the depthwise kernel size, the
expansion ratio and the number of inverted-residual blocks, plus one global width multiplier.

Canonical string: width, then one ``k<kernel>e<expand>d<depth>`` per stage, joined by ``-``:
``w0.75-k3e6d2-k5e3d4-k7e6d1-k3e3d3-k5e6d4-k7e3d2``.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Literal, Sequence

import torch
from pydantic import Field, field_validator
from torch import nn

from frugalnas.spaces.base import SPACE_FAMILIES, Space, SpaceConfig


class MobileNetStem(SpaceConfig):
    channels: int = Field(32, ge=1)
    stride: Literal[1, 2] = 1


class MobileNetStage(SpaceConfig):
    channels: int = Field(ge=1)
    stride: Literal[1, 2]


# MobileNetV2's stages after its first block, with the two early strides dropped for 32x32 input.
_CIFAR_STAGES = tuple(
    MobileNetStage(channels=c, stride=s) for c, s in ((24, 1), (32, 2), (64, 2), (96, 1), (160, 2), (320, 1))
)


def _unique(values: tuple, key: str) -> tuple:
    if len(set(values)) != len(values):
        raise ValueError(f"{key} must not repeat, got {list(values)}")
    return values


class MobileNetConfig(SpaceConfig):
    family: Literal["mobilenet"] = "mobilenet"
    kernel_sizes: tuple[int, ...] = Field((3, 5, 7), min_length=1)
    expand_ratios: tuple[int, ...] = Field((3, 6), min_length=1)
    depths: tuple[int, ...] = Field((1, 2, 3, 4), min_length=1)
    width_multipliers: tuple[float, ...] = Field((0.5, 0.75, 1.0), min_length=1)
    channel_divisor: int = Field(8, ge=1)
    stem: MobileNetStem = MobileNetStem()
    first_channels: int = Field(16, ge=1)
    stages: tuple[MobileNetStage, ...] = Field(_CIFAR_STAGES, min_length=1)
    head_channels: int = Field(1280, ge=1)

    @field_validator("kernel_sizes")
    @classmethod
    def _odd(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if any(k < 1 or k % 2 == 0 for k in v):
            raise ValueError(f"kernel sizes must be odd and positive, got {list(v)}")
        return _unique(v, "kernel_sizes")

    @field_validator("expand_ratios", "depths")
    @classmethod
    def _positive(cls, v: tuple[int, ...], info) -> tuple[int, ...]:
        if any(x < 1 for x in v):
            raise ValueError(f"{info.field_name} must be >= 1, got {list(v)}")
        return _unique(v, info.field_name)

    @field_validator("width_multipliers")
    @classmethod
    def _widths(cls, v: tuple[float, ...]) -> tuple[float, ...]:
        if any(not 0 < w <= 4 for w in v):
            raise ValueError(f"width multipliers must be in (0, 4], got {list(v)}")
        return _unique(v, "width_multipliers")


@dataclass(frozen=True)
class StageArch:
    kernel: int
    expand: int
    depth: int

    def __str__(self) -> str:
        return f"k{self.kernel}e{self.expand}d{self.depth}"


@dataclass(frozen=True)
class MobileNetArch:
    width: float
    stages: tuple[StageArch, ...]

    def __post_init__(self):
        object.__setattr__(self, "stages", tuple(self.stages))  # a list would make the arch unhashable

    def __str__(self) -> str:
        return "-".join([f"w{self.width:g}"] + [str(s) for s in self.stages])


def make_divisible(value: float, divisor: int) -> int:
    """Round channels to a multiple of ``divisor``, never below ``divisor`` nor 10% under
    ``value`` (the rule of MobileNetV2's reference code and torchvision)."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


class ConvBNReLU6(nn.Sequential):
    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int = 1, groups: int = 1):
        super().__init__(
            nn.Conv2d(c_in, c_out, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
            nn.BatchNorm2d(c_out),
            nn.ReLU6(inplace=True),
        )


class InvertedResidual(nn.Module):
    """1x1 expand -> kxk depthwise (may stride) -> 1x1 linear projection; identity shortcut when
    the shape is unchanged."""

    def __init__(self, c_in: int, c_out: int, stride: int, expand: int, kernel: int):
        super().__init__()
        hidden = int(round(c_in * expand))
        layers: list[nn.Module] = [ConvBNReLU6(c_in, hidden, 1)] if expand != 1 else []
        layers += [
            ConvBNReLU6(hidden, hidden, kernel, stride, groups=hidden),
            nn.Conv2d(hidden, c_out, 1, bias=False),
            nn.BatchNorm2d(c_out),
        ]
        self.conv = nn.Sequential(*layers)
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.residual else self.conv(x)


class MobileNetNet(nn.Module):
    def __init__(self, arch: MobileNetArch, cfg: MobileNetConfig, num_classes: int, in_channels: int):
        super().__init__()

        def width(c: float) -> int:
            return make_divisible(c * arch.width, cfg.channel_divisor)

        c = width(cfg.stem.channels)
        layers: list[nn.Module] = [ConvBNReLU6(in_channels, c, 3, cfg.stem.stride)]
        layers.append(InvertedResidual(c, width(cfg.first_channels), 1, 1, 3))
        c = width(cfg.first_channels)
        for stage, choice in zip(cfg.stages, arch.stages):
            for b in range(choice.depth):
                stride = stage.stride if b == 0 else 1
                layers.append(InvertedResidual(c, width(stage.channels), stride, choice.expand, choice.kernel))
                c = width(stage.channels)
        # As in MobileNetV2, the head conv only widens (never narrows) with the multiplier.
        c_head = make_divisible(cfg.head_channels * max(1.0, arch.width), cfg.channel_divisor)
        layers.append(ConvBNReLU6(c, c_head, 1))
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c_head, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pool(self.features(x)).flatten(1))


_STAGE_RE = re.compile(r"k(\d+)e(\d+)d(\d+)")
_WIDTH_RE = re.compile(r"w(\d+(?:\.\d*)?|\.\d+)")


@SPACE_FAMILIES.register("mobilenet")
class MobileNetSpace(Space):
    """Per stage kernel, expansion and depth; one global width multiplier."""

    Config = MobileNetConfig
    config: MobileNetConfig

    def choices(self) -> list[tuple[str, list[Any]]]:
        cfg = self.config
        out: list[tuple[str, list[Any]]] = [("width", list(cfg.width_multipliers))]
        for s in range(1, len(cfg.stages) + 1):
            out += [
                (f"stage{s}.kernel", list(cfg.kernel_sizes)),
                (f"stage{s}.expand", list(cfg.expand_ratios)),
                (f"stage{s}.depth", list(cfg.depths)),
            ]
        return out

    def from_choices(self, indices: Sequence[int]) -> MobileNetArch:
        idx = self._check_indices(indices)
        cfg = self.config
        stages = tuple(
            StageArch(cfg.kernel_sizes[idx[k]], cfg.expand_ratios[idx[k + 1]], cfg.depths[idx[k + 2]])
            for k in range(1, len(idx), 3)
        )
        return MobileNetArch(cfg.width_multipliers[idx[0]], stages)

    def to_choices(self, arch: MobileNetArch) -> list[int]:
        self._check(arch)
        cfg = self.config
        out = [cfg.width_multipliers.index(arch.width)]
        for s in arch.stages:
            out += [cfg.kernel_sizes.index(s.kernel), cfg.expand_ratios.index(s.expand), cfg.depths.index(s.depth)]
        return out

    def _check(self, arch: MobileNetArch) -> None:
        cfg = self.config
        if not isinstance(arch, MobileNetArch):
            raise TypeError(f"mobilenet space expects a MobileNetArch, got {type(arch).__name__}: {arch!r}")
        if arch.width not in cfg.width_multipliers:
            raise ValueError(f"mobilenet: width {arch.width} not allowed; allowed: {list(cfg.width_multipliers)}")
        if len(arch.stages) != len(cfg.stages):
            raise ValueError(f"mobilenet: {len(arch.stages)} stages given, the space has {len(cfg.stages)}")
        for s, stage in enumerate(arch.stages, start=1):
            for name, value, allowed in (("kernel", stage.kernel, cfg.kernel_sizes),
                                         ("expand", stage.expand, cfg.expand_ratios),
                                         ("depth", stage.depth, cfg.depths)):
                if value not in allowed:
                    raise ValueError(f"mobilenet: stage{s}.{name} = {value} not allowed; allowed: {list(allowed)}")

    def parse(self, text: str) -> MobileNetArch:
        cfg = self.config
        expected = (f"expected 'w<width>' then {len(cfg.stages)} x '-k<kernel>e<expand>d<depth>', e.g. "
                    f"{str(self.from_choices([0] * len(self.choices())))!r}")
        parts = str(text).strip().split("-")
        width = _WIDTH_RE.fullmatch(parts[0])
        if width is None:
            raise ValueError(f"bad mobilenet architecture {text!r}: starts with {parts[0]!r}; {expected}")
        if len(parts) - 1 != len(cfg.stages):
            raise ValueError(f"bad mobilenet architecture {text!r}: {len(parts) - 1} stages; {expected}")
        # Snap to the configured value so e.g. 'w1' and 'w1.0' are the same architecture.
        matches = [w for w in cfg.width_multipliers if math.isclose(w, float(width.group(1)))]
        if not matches:
            raise ValueError(f"bad mobilenet architecture {text!r}: width {width.group(1)} not in "
                             f"{list(cfg.width_multipliers)}")
        stages = []
        for s, part in enumerate(parts[1:], start=1):
            m = _STAGE_RE.fullmatch(part)
            if m is None:
                raise ValueError(f"bad mobilenet architecture {text!r}: stage {s} is {part!r}; {expected}")
            stages.append(StageArch(*(int(g) for g in m.groups())))
        arch = MobileNetArch(matches[0], tuple(stages))
        try:
            self._check(arch)
        except ValueError as err:
            raise ValueError(f"bad mobilenet architecture {text!r}: {err}") from None
        return arch

    def build(self, arch: MobileNetArch, num_classes: int, in_channels: int) -> MobileNetNet:
        self._check(arch)
        return MobileNetNet(arch, self.config, num_classes, in_channels)
