"""Building blocks shared by the cell spaces (NAS-Bench-201 and DARTS).

The layers follow the published code of NAS-Bench-201 (Dong & Yang, 2020) and DARTS (Liu et al.,
2019) so that parameter counts and behaviour match the papers. One deliberate difference: the
stride-2 blocks give ``ceil(H / 2)`` on odd sizes too (the originals only work on even sizes), so
networks run on any image size >= 8.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn


class ReLUConvBN(nn.Sequential):
    """ReLU -> Conv -> BatchNorm, the convolution unit of both cell spaces."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, padding: int,
                 dilation: int = 1, affine: bool = True):
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=padding, dilation=dilation, bias=False),
            nn.BatchNorm2d(c_out, affine=affine),
        )


class DilConv(nn.Sequential):
    """ReLU -> dilated depthwise conv -> pointwise conv -> BatchNorm (DARTS ``dil_conv_*``)."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, padding: int, dilation: int,
                 affine: bool = True):
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(c_in, c_in, kernel, stride=stride, padding=padding, dilation=dilation,
                      groups=c_in, bias=False),
            nn.Conv2d(c_in, c_out, 1, bias=False),
            nn.BatchNorm2d(c_out, affine=affine),
        )


class SepConv(nn.Sequential):
    """Two stacked depthwise-separable convs (DARTS ``sep_conv_*``); only the first may stride."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, padding: int, affine: bool = True):
        super().__init__(
            DilConv(c_in, c_in, kernel, stride, padding, 1, affine),
            DilConv(c_in, c_out, kernel, 1, padding, 1, affine),
        )


class Zero(nn.Module):
    """The ``none`` op: zeros of the output shape, so a cell keeps its wiring whatever is chosen."""

    def __init__(self, stride: int = 1):
        super().__init__()
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :, :: self.stride, :: self.stride].mul(0.0)


class FactorizedReduce(nn.Module):
    """Halves the resolution with two 1x1 stride-2 convs on pixel grids offset by one, concatenated.

    DARTS slices ``x[:, :, 1:, 1:]`` for the second grid, which breaks on odd sizes; padding one
    row/column first samples the same pixels on even sizes and gives ``ceil(H / 2)`` on odd ones.
    """

    def __init__(self, c_in: int, c_out: int, affine: bool = True):
        super().__init__()
        self.relu = nn.ReLU(inplace=False)
        self.conv_1 = nn.Conv2d(c_in, c_out // 2, 1, stride=2, bias=False)
        self.conv_2 = nn.Conv2d(c_in, c_out - c_out // 2, 1, stride=2, bias=False)
        self.bn = nn.BatchNorm2d(c_out, affine=affine)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(x)
        shifted = F.pad(x, (0, 1, 0, 1))[:, :, 1:, 1:]
        return self.bn(torch.cat([self.conv_1(x), self.conv_2(shifted)], dim=1))


class ResNetBasicBlock(nn.Module):
    """NAS-Bench-201's residual reduction block between stages (stride 2, channels change)."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv_a = ReLUConvBN(c_in, c_out, 3, stride, 1)
        self.conv_b = ReLUConvBN(c_out, c_out, 3, 1, 1)
        if stride == 2:
            # ceil_mode keeps the shortcut the same size as conv_a on odd inputs.
            self.shortcut = nn.Sequential(
                nn.AvgPool2d(kernel_size=2, stride=2, ceil_mode=True),
                nn.Conv2d(c_in, c_out, 1, bias=False),
            )
        elif c_in != c_out:
            self.shortcut = ReLUConvBN(c_in, c_out, 1, 1, 0)
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shortcut(x) + self.conv_b(self.conv_a(x))


# name -> factory(channels, stride, affine); channels in == channels out inside a cell.
OpFactory = Callable[[int, int, bool], nn.Module]

NB201_OPS: dict[str, OpFactory] = {
    "none": lambda c, stride, affine: Zero(stride),
    "skip_connect": lambda c, stride, affine: nn.Identity() if stride == 1 else FactorizedReduce(c, c, affine),
    "nor_conv_1x1": lambda c, stride, affine: ReLUConvBN(c, c, 1, stride, 0, affine=affine),
    "nor_conv_3x3": lambda c, stride, affine: ReLUConvBN(c, c, 3, stride, 1, affine=affine),
    "avg_pool_3x3": lambda c, stride, affine: nn.AvgPool2d(3, stride=stride, padding=1, count_include_pad=False),
}

DARTS_OPS: dict[str, OpFactory] = {
    "none": lambda c, stride, affine: Zero(stride),
    "max_pool_3x3": lambda c, stride, affine: nn.MaxPool2d(3, stride=stride, padding=1),
    "avg_pool_3x3": lambda c, stride, affine: nn.AvgPool2d(3, stride=stride, padding=1, count_include_pad=False),
    "skip_connect": lambda c, stride, affine: nn.Identity() if stride == 1 else FactorizedReduce(c, c, affine),
    "sep_conv_3x3": lambda c, stride, affine: SepConv(c, c, 3, stride, 1, affine),
    "sep_conv_5x5": lambda c, stride, affine: SepConv(c, c, 5, stride, 2, affine),
    "dil_conv_3x3": lambda c, stride, affine: DilConv(c, c, 3, stride, 2, 2, affine),
    "dil_conv_5x5": lambda c, stride, affine: DilConv(c, c, 5, stride, 4, 2, affine),
}


class MixedOp(nn.Module):
    """Every candidate op on one edge, summed with the softmax weights of that edge's alphas.

    ``pool_bn`` adds a non-affine BatchNorm after pooling ops, as DARTS's search network does,
    so the parameter-free ops are on the same scale as the convolutions.
    """

    def __init__(self, table: dict[str, OpFactory], op_names: list[str], channels: int, stride: int,
                 pool_bn: bool = False):
        super().__init__()
        ops = []
        for name in op_names:
            op = table[name](channels, stride, False)
            if pool_bn and "pool" in name:
                op = nn.Sequential(op, nn.BatchNorm2d(channels, affine=False))
            ops.append(op)
        self.ops = nn.ModuleList(ops)

    def forward(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        return sum(w * op(x) for w, op in zip(weights, self.ops))


class Supernet(nn.Module):
    """A weight-sharing network over a whole cell space, for gradient-based search (DARTS).

    The architecture weights (alphas) are registered parameters whose names start with
    ``alpha`` so they travel in ``state_dict``; optimisers take the two groups separately.
    """

    def arch_parameters(self) -> list[nn.Parameter]:
        return [p for name, p in self.named_parameters() if name.startswith("alpha")]

    def weight_parameters(self) -> list[nn.Parameter]:
        return [p for name, p in self.named_parameters() if not name.startswith("alpha")]
