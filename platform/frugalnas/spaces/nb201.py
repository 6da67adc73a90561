"""The NAS-Bench-201 cell space (Dong & Yang, ICLR 2020).

A cell is a DAG of 4 nodes; node ``i`` sums one op applied to every earlier node, so there are
6 edges and, with the 5 standard ops, 5**6 = 15,625 cells. The canonical string is
NAS-Bench-201's own, so architectures can be looked up in its tables:
``|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|``.
The network repeats one cell ``cells_per_stage`` times per stage, with a residual reduction
block (stride 2, channels doubled) between stages, as NAS-Bench-201's macro skeleton does.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Sequence

import torch
from pydantic import Field, field_validator
from torch import nn

from frugalnas.spaces.base import SPACE_FAMILIES, CellSpace, SpaceConfig
from frugalnas.spaces.ops import NB201_OPS, MixedOp, ResNetBasicBlock, Supernet

NODES = 4
EDGES: tuple[tuple[int, int], ...] = tuple((i, j) for i in range(1, NODES) for j in range(i))
"""(to, from) node pairs in NAS-Bench-201's string order: 1<-0, 2<-0, 2<-1, 3<-0, 3<-1, 3<-2."""

OpName = Literal["none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3"]


class NB201Network(SpaceConfig):
    """The macro skeleton: stem channels C (doubled per stage), cells per stage N, stages."""

    channels: int = Field(16, ge=1)
    cells_per_stage: int = Field(5, ge=1)
    stages: int = Field(3, ge=1)


class NB201Config(SpaceConfig):
    family: Literal["nb201"] = "nb201"
    ops: tuple[OpName, ...] = Field(tuple(NB201_OPS), min_length=2)
    network: NB201Network = NB201Network()
    supernet: NB201Network = NB201Network()

    @field_validator("ops")
    @classmethod
    def _unique(cls, ops: tuple[str, ...]) -> tuple[str, ...]:
        if len(set(ops)) != len(ops):
            raise ValueError(f"ops must not repeat, got {list(ops)}")
        return ops


@dataclass(frozen=True)
class NB201Arch:
    """One op name per edge, in :data:`EDGES` order."""

    ops: tuple[str, ...]

    def __post_init__(self):
        object.__setattr__(self, "ops", tuple(self.ops))  # a list would make the arch unhashable
        if len(self.ops) != len(EDGES):
            raise ValueError(f"an NAS-Bench-201 cell has {len(EDGES)} edges, got {len(self.ops)} ops")

    def __str__(self) -> str:
        nodes, k = [], 0
        for i in range(1, NODES):
            nodes.append("|" + "|".join(f"{self.ops[k + j]}~{j}" for j in range(i)) + "|")
            k += i
        return "+".join(nodes)


class _Cell(nn.Module):
    """NAS-Bench-201's cell: node i = sum over j < i of edge_op(node j); output is the last node."""

    def __init__(self, edge_ops: Sequence[nn.Module]):
        super().__init__()
        self.edges = nn.ModuleList(edge_ops)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        nodes = [x]
        for i in range(1, NODES):
            start = i * (i - 1) // 2  # index of edge i<-0
            nodes.append(sum(self.edges[start + j](nodes[j]) for j in range(i)))
        return nodes[-1]


class _SearchCell(nn.Module):
    """The cell with a MixedOp on every edge, weighted by the supernet's alphas."""

    def __init__(self, op_names: list[str], channels: int):
        super().__init__()
        self.edges = nn.ModuleList(MixedOp(NB201_OPS, op_names, channels, 1) for _ in EDGES)

    def forward(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        nodes = [x]
        for i in range(1, NODES):
            start = i * (i - 1) // 2
            nodes.append(sum(self.edges[start + j](nodes[j], weights[start + j]) for j in range(i)))
        return nodes[-1]


def _stage_plan(net: NB201Network) -> list[tuple[int, bool]]:
    """(channels, is_reduction_block) for every block after the stem."""
    plan = []
    for s in range(net.stages):
        if s > 0:
            plan.append((net.channels * 2**s, True))
        plan += [(net.channels * 2**s, False)] * net.cells_per_stage
    return plan


class NB201Net(nn.Module):
    """stem conv -> [N cells, reduction block] x stages (no reduction after the last) -> BN-ReLU
    -> global average pool -> linear classifier."""

    def __init__(self, arch: NB201Arch, net: NB201Network, num_classes: int, in_channels: int):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, net.channels, 3, padding=1, bias=False), nn.BatchNorm2d(net.channels)
        )
        blocks, c_prev = [], net.channels
        for c, reduction in _stage_plan(net):
            if reduction:
                blocks.append(ResNetBasicBlock(c_prev, c, 2))
            else:
                blocks.append(_Cell([NB201_OPS[name](c, 1, True) for name in arch.ops]))
            c_prev = c
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Sequential(nn.BatchNorm2d(c_prev), nn.ReLU(inplace=False), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.classifier = nn.Linear(c_prev, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.head(self.blocks(self.stem(x))))


class NB201Supernet(Supernet):
    """The same skeleton with search cells; one alpha matrix (edges x ops) shared by all cells,
    as in NAS-Bench-201's DARTS baseline."""

    def __init__(self, op_names: list[str], net: NB201Network, num_classes: int, in_channels: int):
        super().__init__()
        self.op_names = list(op_names)
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, net.channels, 3, padding=1, bias=False), nn.BatchNorm2d(net.channels)
        )
        blocks, c_prev = [], net.channels
        for c, reduction in _stage_plan(net):
            blocks.append(ResNetBasicBlock(c_prev, c, 2) if reduction else _SearchCell(self.op_names, c))
            c_prev = c
        self.blocks = nn.ModuleList(blocks)
        self.head = nn.Sequential(nn.BatchNorm2d(c_prev), nn.ReLU(inplace=False), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.classifier = nn.Linear(c_prev, num_classes)
        self.alpha = nn.Parameter(1e-3 * torch.randn(len(EDGES), len(self.op_names)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights = torch.softmax(self.alpha, dim=-1)
        x = self.stem(x)
        for block in self.blocks:
            x = block(x, weights) if isinstance(block, _SearchCell) else block(x)
        return self.classifier(self.head(x))


@SPACE_FAMILIES.register("nb201")
class NB201Space(CellSpace):
    """NAS-Bench-201: one op (from ``ops``) per edge of a 4-node cell."""

    Config = NB201Config
    config: NB201Config

    def choices(self) -> list[tuple[str, list[str]]]:
        return [(f"{i}<-{j}", list(self.config.ops)) for i, j in EDGES]

    def from_choices(self, indices: Sequence[int]) -> NB201Arch:
        indices = self._check_indices(indices)
        return NB201Arch(tuple(self.config.ops[i] for i in indices))

    def to_choices(self, arch: NB201Arch) -> list[int]:
        self._check(arch)
        return [self.config.ops.index(op) for op in arch.ops]

    def _check(self, arch: NB201Arch) -> None:
        if not isinstance(arch, NB201Arch):
            raise TypeError(f"nb201 space expects an NB201Arch, got {type(arch).__name__}: {arch!r}")
        for (i, j), op in zip(EDGES, arch.ops):
            if op not in self.config.ops:
                raise ValueError(f"nb201: edge {i}<-{j} has op {op!r}; allowed: {', '.join(self.config.ops)}")

    def parse(self, text: str) -> NB201Arch:
        expected = (
            "expected NAS-Bench-201 form '|op~0|+|op~0|op~1|+|op~0|op~1|op~2|' "
            f"with op in {', '.join(self.config.ops)}"
        )
        nodes = str(text).strip().split("+")
        if len(nodes) != NODES - 1:
            raise ValueError(f"bad nb201 architecture {text!r}: {len(nodes)} nodes, {expected}")
        ops = []
        for i, node in enumerate(nodes, start=1):
            if not (len(node) > 2 and node.startswith("|") and node.endswith("|")):
                raise ValueError(f"bad nb201 architecture {text!r}: node {i} is {node!r}; {expected}")
            tokens = node[1:-1].split("|")
            if len(tokens) != i:
                raise ValueError(f"bad nb201 architecture {text!r}: node {i} needs {i} inputs, got {len(tokens)}; {expected}")
            for j, token in enumerate(tokens):
                op, sep, source = token.partition("~")
                if not sep or source != str(j):
                    raise ValueError(f"bad nb201 architecture {text!r}: {token!r} should be 'op~{j}'; {expected}")
                if op not in self.config.ops:
                    raise ValueError(f"bad nb201 architecture {text!r}: unknown op {op!r}; {expected}")
                ops.append(op)
        return NB201Arch(tuple(ops))

    def build(self, arch: NB201Arch, num_classes: int, in_channels: int) -> NB201Net:
        self._check(arch)
        return NB201Net(arch, self.config.network, num_classes, in_channels)

    def supernet(self, num_classes: int, in_channels: int) -> NB201Supernet:
        return NB201Supernet(self.config.ops, self.config.supernet, num_classes, in_channels)

    def derive(self, supernet: NB201Supernet) -> NB201Arch:
        """The strongest op (argmax of alpha, ``none`` included) on every edge."""
        if not isinstance(supernet, NB201Supernet) or supernet.op_names != list(self.config.ops):
            raise ValueError("derive needs a supernet made by this nb201 space's supernet()")
        best = supernet.alpha.detach().argmax(dim=-1).tolist()
        return NB201Arch(tuple(supernet.op_names[k] for k in best))
