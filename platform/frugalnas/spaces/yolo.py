"""A macro space over YOLO detectors, written as ultralytics model YAMLs (the YOLOv8 layout).

The backbone has a fixed stem conv and four stages (P2/4, P3/8, P4/16, P5/32); each stage is a
stride-2 downsample convolution followed by a block. The search picks one global width multiple,
per stage the downsample (conv type and kernel), the block type (C2f, C3k2, C3, C3Ghost) and its
repeats, and the SPPF pooling kernel. The neck is YOLOv8's PAN (C2f blocks) with a Detect head on
P3-P5. Every architecture turns into an ultralytics model YAML with explicit ``depth_multiple`` /
``width_multiple`` and no ``scales`` table (:meth:`YoloSpace.model_dict`), which ultralytics builds
and trains as it would one of its own (``yolo train model=arch.yaml data=...``).

Canonical string: width, then ``<downsample>.<block>x<repeats>`` per stage, then the SPPF kernel:
``w0.25-conv3.C2fx1-ghost3.C3k2x2-dw5.C3x3-conv5.C3Ghostx1-sppf5``.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, Sequence

from pydantic import Field, field_validator
from torch import nn

from frugalnas.spaces.base import SPACE_FAMILIES, Space, SpaceConfig, count_flops, count_params

BLOCKS = ("C2f", "C3k2", "C3", "C3Ghost")
#: Downsample convolutions by name prefix: ultralytics module and how its args are written.
DOWNSAMPLE_MODULES = {"conv": "Conv", "ghost": "GhostConv", "dw": "DWConv"}
_DOWNSAMPLE_RE = re.compile(r"(conv|ghost|dw)(\d+)")
STAGE_NAMES = ("P2", "P3", "P4", "P5")


def _unique(values: tuple, key: str) -> tuple:
    if len(set(values)) != len(values):
        raise ValueError(f"{key} must not repeat, got {list(values)}")
    return values


class YoloConfig(SpaceConfig):
    family: Literal["yolo"] = "yolo"
    width_multiples: tuple[float, ...] = Field((0.125, 0.1875, 0.25, 0.375), min_length=1)
    blocks: tuple[Literal["C2f", "C3k2", "C3", "C3Ghost"], ...] = Field(BLOCKS, min_length=1)
    repeats: tuple[int, ...] = Field((1, 2, 3), min_length=1)
    downsamples: tuple[str, ...] = Field(("conv3", "conv5", "ghost3", "dw5"), min_length=1)
    sppf_kernels: tuple[int, ...] = Field((3, 5, 7), min_length=1)
    stem_channels: int = Field(64, ge=8, description="the fixed stride-2 3x3 stem conv, before the width multiple")
    stage_channels: tuple[int, int, int, int] = Field((128, 256, 512, 1024),
                                                      description="P2..P5 output channels before the width multiple")
    neck_repeats: int = Field(1, ge=1, le=6, description="repeats of each C2f block of the fixed PAN neck")

    @field_validator("width_multiples")
    @classmethod
    def _widths(cls, v):
        if any(not 0 < w <= 2 for w in v):
            raise ValueError(f"width multiples must be in (0, 2], got {list(v)}")
        return _unique(v, "width_multiples")

    @field_validator("blocks")
    @classmethod
    def _blocks(cls, v):
        return _unique(v, "blocks")

    @field_validator("repeats")
    @classmethod
    def _repeats(cls, v):
        if any(r < 1 or r > 8 for r in v):
            raise ValueError(f"repeats must be between 1 and 8, got {list(v)}")
        return _unique(v, "repeats")

    @field_validator("downsamples")
    @classmethod
    def _downsamples(cls, v):
        for name in v:
            m = _DOWNSAMPLE_RE.fullmatch(name)
            if m is None or int(m.group(2)) % 2 == 0 or not 1 <= int(m.group(2)) <= 9:
                raise ValueError(f"downsample {name!r} is not <type><odd kernel 1..9> with type one of "
                                 f"{', '.join(DOWNSAMPLE_MODULES)} (e.g. conv3, ghost3, dw5)")
        return _unique(v, "downsamples")

    @field_validator("sppf_kernels")
    @classmethod
    def _sppf(cls, v):
        if any(k < 1 or k % 2 == 0 or k > 13 for k in v):
            raise ValueError(f"SPPF kernels must be odd, 1..13, got {list(v)}")
        return _unique(v, "sppf_kernels")

    @field_validator("stage_channels")
    @classmethod
    def _channels(cls, v):
        if any(c < 8 for c in v):
            raise ValueError(f"stage channels must be >= 8, got {list(v)}")
        return v


@dataclass(frozen=True)
class YoloStage:
    downsample: str  # e.g. "conv3": a stride-2 Conv with a 3x3 kernel
    block: str
    repeats: int

    def __str__(self) -> str:
        return f"{self.downsample}.{self.block}x{self.repeats}"


@dataclass(frozen=True)
class YoloArch:
    width: float
    stages: tuple[YoloStage, ...]
    sppf: int

    def __post_init__(self):
        object.__setattr__(self, "stages", tuple(self.stages))  # a list would make the arch unhashable

    def __str__(self) -> str:
        return "-".join([f"w{self.width:g}", *(str(s) for s in self.stages), f"sppf{self.sppf}"])


_STAGE_RE = re.compile(r"((?:conv|ghost|dw)\d+)\.(C2f|C3k2|C3Ghost|C3)x(\d+)")
_WIDTH_RE = re.compile(r"w(\d+(?:\.\d*)?|\.\d+)")
_SPPF_RE = re.compile(r"sppf(\d+)")


def downsample_layer(name: str, channels: int) -> list:
    """The ultralytics layer row ``[from, repeats, module, args]`` of a stride-2 downsample."""
    kind, kernel = _DOWNSAMPLE_RE.fullmatch(name).groups()
    return [-1, 1, DOWNSAMPLE_MODULES[kind], [channels, int(kernel), 2]]


def block_layer(block: str, repeats: int, channels: int) -> list:
    """The layer row of a backbone block (residual shortcuts on, as in YOLOv8's backbone)."""
    if block == "C3k2":
        return [-1, repeats, "C3k2", [channels, False]]  # c3k=False: plain Bottlenecks inside (YOLO11 n/s)
    return [-1, repeats, block, [channels, True]]


@SPACE_FAMILIES.register("yolo")
class YoloSpace(Space):
    """Width multiple; per backbone stage downsample, block type and repeats; SPPF kernel."""

    Config = YoloConfig
    config: YoloConfig
    task: ClassVar[str] = "detection"

    def choices(self) -> list[tuple[str, list[Any]]]:
        cfg = self.config
        out: list[tuple[str, list[Any]]] = [("width", list(cfg.width_multiples))]
        for name in STAGE_NAMES:
            out += [(f"{name}.downsample", list(cfg.downsamples)), (f"{name}.block", list(cfg.blocks)),
                    (f"{name}.repeats", list(cfg.repeats))]
        out.append(("sppf", list(cfg.sppf_kernels)))
        return out

    def from_choices(self, indices: Sequence[int]) -> YoloArch:
        idx = self._check_indices(indices)
        cfg = self.config
        stages = tuple(YoloStage(cfg.downsamples[idx[k]], cfg.blocks[idx[k + 1]], cfg.repeats[idx[k + 2]])
                       for k in range(1, 1 + 3 * len(STAGE_NAMES), 3))
        return YoloArch(cfg.width_multiples[idx[0]], stages, cfg.sppf_kernels[idx[-1]])

    def to_choices(self, arch: YoloArch) -> list[int]:
        self._check(arch)
        cfg = self.config
        out = [cfg.width_multiples.index(arch.width)]
        for s in arch.stages:
            out += [cfg.downsamples.index(s.downsample), cfg.blocks.index(s.block), cfg.repeats.index(s.repeats)]
        return out + [cfg.sppf_kernels.index(arch.sppf)]

    def _check(self, arch: YoloArch) -> None:
        cfg = self.config
        if not isinstance(arch, YoloArch):
            raise TypeError(f"yolo space expects a YoloArch, got {type(arch).__name__}: {arch!r}")
        if arch.width not in cfg.width_multiples:
            raise ValueError(f"yolo: width {arch.width} not allowed; allowed: {list(cfg.width_multiples)}")
        if len(arch.stages) != len(STAGE_NAMES):
            raise ValueError(f"yolo: {len(arch.stages)} stages given, the space has {len(STAGE_NAMES)} (P2..P5)")
        for name, stage in zip(STAGE_NAMES, arch.stages):
            for what, value, allowed in (("downsample", stage.downsample, cfg.downsamples),
                                         ("block", stage.block, cfg.blocks), ("repeats", stage.repeats, cfg.repeats)):
                if value not in allowed:
                    raise ValueError(f"yolo: {name}.{what} = {value} not allowed; allowed: {list(allowed)}")
        if arch.sppf not in cfg.sppf_kernels:
            raise ValueError(f"yolo: sppf kernel {arch.sppf} not allowed; allowed: {list(cfg.sppf_kernels)}")

    def parse(self, text: str) -> YoloArch:
        cfg = self.config
        example = str(self.from_choices([0] * len(self.choices())))
        expected = ("expected 'w<width>', then 4 x '-<downsample>.<block>x<repeats>' (P2..P5), then '-sppf<kernel>', "
                    f"e.g. {example!r}")
        parts = str(text).strip().split("-")
        if len(parts) != 2 + len(STAGE_NAMES):
            raise ValueError(f"bad yolo architecture {text!r}: {len(parts)} parts; {expected}")
        width, sppf = _WIDTH_RE.fullmatch(parts[0]), _SPPF_RE.fullmatch(parts[-1])
        if width is None or sppf is None:
            raise ValueError(f"bad yolo architecture {text!r}; {expected}")
        # Snap to the configured value so 'w0.25' and 'w.25' are the same architecture.
        widths = [w for w in cfg.width_multiples if math.isclose(w, float(width.group(1)))]
        if not widths:
            raise ValueError(f"bad yolo architecture {text!r}: width {width.group(1)} not in {list(cfg.width_multiples)}")
        stages = []
        for name, part in zip(STAGE_NAMES, parts[1:-1]):
            m = _STAGE_RE.fullmatch(part)
            if m is None:
                raise ValueError(f"bad yolo architecture {text!r}: stage {name} is {part!r}; {expected}")
            stages.append(YoloStage(m.group(1), m.group(2), int(m.group(3))))
        arch = YoloArch(widths[0], tuple(stages), int(sppf.group(1)))
        try:
            self._check(arch)
        except ValueError as err:
            raise ValueError(f"bad yolo architecture {text!r}: {err}") from None
        return arch

    # -- ultralytics model YAML ----------------------------------------------------------------

    def model_dict(self, arch: YoloArch, num_classes: int, in_channels: int = 3) -> dict:
        """The ultralytics model YAML of ``arch`` as a dict (layer indices as in yolov8.yaml)."""
        self._check(arch)
        cfg = self.config
        backbone = [[-1, 1, "Conv", [cfg.stem_channels, 3, 2]]]  # 0: P1/2
        for stage, channels in zip(arch.stages, cfg.stage_channels):  # 1-2: P2/4, 3-4: P3/8, 5-6: P4/16, 7-8: P5/32
            backbone += [downsample_layer(stage.downsample, channels),
                         block_layer(stage.block, stage.repeats, channels)]
        backbone.append([-1, 1, "SPPF", [cfg.stage_channels[3], arch.sppf]])  # 9
        c3, c4, c5, n = cfg.stage_channels[1], cfg.stage_channels[2], cfg.stage_channels[3], cfg.neck_repeats
        head = [
            [-1, 1, "nn.Upsample", [None, 2, "nearest"]],
            [[-1, 6], 1, "Concat", [1]],  # with backbone P4
            [-1, n, "C2f", [c4]],  # 12
            [-1, 1, "nn.Upsample", [None, 2, "nearest"]],
            [[-1, 4], 1, "Concat", [1]],  # with backbone P3
            [-1, n, "C2f", [c3]],  # 15 (P3/8 small)
            [-1, 1, "Conv", [c3, 3, 2]],
            [[-1, 12], 1, "Concat", [1]],  # with head P4
            [-1, n, "C2f", [c4]],  # 18 (P4/16 medium)
            [-1, 1, "Conv", [c4, 3, 2]],
            [[-1, 9], 1, "Concat", [1]],  # with head P5
            [-1, n, "C2f", [c5]],  # 21 (P5/32 large)
            [[15, 18, 21], 1, "Detect", ["nc"]],  # Detect(P3, P4, P5)
        ]
        model = {"nc": int(num_classes), "depth_multiple": 1.0, "width_multiple": float(arch.width),
                 "backbone": backbone, "head": head}
        if in_channels != 3:  # ultralytics reads images as 3-channel colour unless the data says otherwise
            model["channels"] = int(in_channels)
        return model

    def model_yaml(self, arch: YoloArch, num_classes: int, in_channels: int = 3,
                   names: Sequence[str] | None = None) -> str:
        """``arch`` as the text of an ultralytics model YAML file (what ``OUT/best.yaml`` holds), one
        layer per line as in ultralytics' own model files."""
        import yaml

        def row(layer: list) -> str:
            return yaml.safe_dump(layer, default_flow_style=True, width=1000).removesuffix("\n...\n").strip()

        model = self.model_dict(arch, num_classes, in_channels)
        lines = [f"# frugalnas yolo architecture {arch}",
                 "# An ultralytics model YAML: yolo train model=THIS_FILE data=YOUR_DATA.yaml"]
        if names:
            lines.append(f"# classes: {', '.join(names)}")
        lines += [f"{key}: {row(value)}" for key, value in model.items() if key not in ("backbone", "head")]
        for section in ("backbone", "head"):
            lines.append(f"{section}:")
            offset = 0 if section == "backbone" else len(model["backbone"])
            lines += [f"  - {row(layer)}  # {offset + i}" for i, layer in enumerate(model[section])]
        return "\n".join(lines) + "\n"

    def _built(self, arch: YoloArch, num_classes: int, in_channels: int) -> nn.Module:
        """The last model built for counting (params and FLOPs are asked for one after the other)."""
        key = (arch, num_classes, in_channels)
        if getattr(self, "_counted", (None, None))[0] != key:
            self._counted = (key, self.build(arch, num_classes, in_channels))
        return self._counted[1]

    def count_params(self, arch: YoloArch, num_classes: int, in_channels: int) -> int:
        return count_params(self._built(arch, num_classes, in_channels))

    def count_flops(self, arch: YoloArch, num_classes: int, in_channels: int, image_size) -> int:
        return count_flops(self._built(arch, num_classes, in_channels), in_channels, image_size)

    def build(self, arch: YoloArch, num_classes: int, in_channels: int) -> nn.Module:
        """An ultralytics ``DetectionModel`` (untrained) of ``arch``."""
        from frugalnas.train.yolo_env import prepare_ultralytics

        prepare_ultralytics()
        from ultralytics.nn.tasks import DetectionModel

        return DetectionModel(cfg=self.model_dict(arch, num_classes, in_channels), ch=in_channels, nc=num_classes,
                              verbose=False)
