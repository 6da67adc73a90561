"""The DARTS cell space (Liu, Simonyan & Yang, ICLR 2019).

Two cells, normal and reduction; each has two input states (the outputs of the two previous
cells) and ``nodes`` intermediate nodes. Node ``n`` (numbered 2, 3, ... after the inputs) sums
two ops applied to two distinct earlier states; the cell outputs the concatenation of all
intermediate nodes. Architectures are written as DARTS genotypes:
``Genotype(normal=[('sep_conv_3x3', 0), ...], normal_concat=[2, 3, 4, 5], reduce=[...], reduce_concat=[2, 3, 4, 5])``.

The ``none`` (zero) op is a candidate of the supernet only: DARTS never keeps it in a derived
cell, so the discrete space (sampling, mutation, genotypes) uses the other ops, 7 by default,
and has (prod_n C(n, 2) * 7**2)**2 ~ 1e18 architectures, as in the paper.

Canonical form: the two (op, input) pairs of a node are listed by increasing input, because
their order does not change the network (DARTS itself lists them by alpha strength). So a
published genotype parses to the same architecture, but may print with a node's pairs swapped.
"""
from __future__ import annotations

import ast
import itertools
import operator
from dataclasses import dataclass
from typing import Any, Literal, Sequence

import numpy as np
import torch
from pydantic import Field, field_validator
from torch import nn

from frugalnas.spaces.base import SPACE_FAMILIES, CellSpace, SpaceConfig
from frugalnas.spaces.ops import DARTS_OPS, FactorizedReduce, MixedOp, ReLUConvBN, Supernet

CELLS = ("normal", "reduce")

OpName = Literal[
    "none", "max_pool_3x3", "avg_pool_3x3", "skip_connect",
    "sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5",
]


class DartsNetwork(SpaceConfig):
    """Macro skeleton: ``layers`` cells, reductions at layers//3 and 2*layers//3 (channels
    doubled there), initial cell channels C, stem width ``stem_multiplier * C``."""

    channels: int = Field(36, ge=2)
    layers: int = Field(20, ge=1)
    stem_multiplier: int = Field(3, ge=1)


class DartsConfig(SpaceConfig):
    family: Literal["darts"] = "darts"
    ops: tuple[OpName, ...] = Field(tuple(DARTS_OPS), min_length=2)
    nodes: int = Field(4, ge=1, le=16)
    network: DartsNetwork = DartsNetwork()
    supernet: DartsNetwork = DartsNetwork(channels=16, layers=8)

    @field_validator("ops")
    @classmethod
    def _valid_ops(cls, ops: tuple[str, ...]) -> tuple[str, ...]:
        if len(set(ops)) != len(ops):
            raise ValueError(f"ops must not repeat, got {list(ops)}")
        if all(op == "none" for op in ops):
            raise ValueError("ops need at least one op besides 'none'")
        return ops


def _pairs(value: Any, field: str) -> tuple[tuple[str, int], ...]:
    """``value`` as (op, input) pairs with each node's two pairs ordered by input."""
    try:
        pairs = [tuple(p) for p in value]
    except TypeError:
        raise ValueError(f"Genotype.{field} must be a list of (op, input) pairs, got {value!r}") from None
    for k, p in enumerate(pairs):
        try:
            if len(p) != 2 or not isinstance(p[0], str) or isinstance(p[1], bool):
                raise TypeError
            pairs[k] = (p[0], operator.index(p[1]))  # numpy ints too
        except TypeError:
            raise ValueError(f"Genotype.{field}: {p!r} is not an (op name, input index) pair") from None
    if len(pairs) % 2:
        raise ValueError(f"Genotype.{field} needs two pairs per node, got {len(pairs)} pairs")
    ordered = []
    for k in range(0, len(pairs), 2):
        ordered += sorted(pairs[k : k + 2], key=lambda p: (p[1], p[0]))
    return tuple(ordered)


@dataclass(frozen=True, repr=False)
class Genotype:
    """A DARTS genotype; accepts lists and ``range`` like DARTS's namedtuple, stores tuples."""

    normal: tuple[tuple[str, int], ...]
    normal_concat: tuple[int, ...]
    reduce: tuple[tuple[str, int], ...]
    reduce_concat: tuple[int, ...]

    def __post_init__(self):
        for cell in CELLS:
            object.__setattr__(self, cell, _pairs(getattr(self, cell), cell))
            concat = getattr(self, f"{cell}_concat")
            try:
                object.__setattr__(self, f"{cell}_concat", tuple(int(i) for i in concat))
            except (TypeError, ValueError):
                raise ValueError(f"Genotype.{cell}_concat must be a list of node indices, got {concat!r}") from None

    def __str__(self) -> str:
        return (
            f"Genotype(normal={list(self.normal)}, normal_concat={list(self.normal_concat)}, "
            f"reduce={list(self.reduce)}, reduce_concat={list(self.reduce_concat)})"
        )

    __repr__ = __str__


def _literal(node: ast.expr) -> Any:
    """A literal, or ``range(...)`` of literals (published genotypes use both forms for concat)."""
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "range" and not node.keywords:
        return list(range(*(ast.literal_eval(a) for a in node.args)))
    return ast.literal_eval(node)


def _reduction_layers(layers: int) -> set[int]:
    return {layers // 3, 2 * layers // 3}


class _Cell(nn.Module):
    """A DARTS evaluation cell: preprocess both inputs to C channels, then each node adds two
    ops of earlier states; ops on the cell inputs stride 2 in a reduction cell."""

    def __init__(self, pairs, concat, c_pp: int, c_p: int, c: int, reduction: bool, reduction_prev: bool):
        super().__init__()
        self.preprocess0 = FactorizedReduce(c_pp, c) if reduction_prev else ReLUConvBN(c_pp, c, 1, 1, 0)
        self.preprocess1 = ReLUConvBN(c_p, c, 1, 1, 0)
        self.ops = nn.ModuleList(DARTS_OPS[name](c, 2 if reduction and j < 2 else 1, True) for name, j in pairs)
        self.inputs = [j for _, j in pairs]
        self.concat = list(concat)

    def forward(self, s0: torch.Tensor, s1: torch.Tensor) -> torch.Tensor:
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        for k in range(0, len(self.ops), 2):
            states.append(self.ops[k](states[self.inputs[k]]) + self.ops[k + 1](states[self.inputs[k + 1]]))
        return torch.cat([states[i] for i in self.concat], dim=1)


class DartsNet(nn.Module):
    """DARTS's evaluation network (NetworkCIFAR without the auxiliary head): stem conv, a
    stack of cells fed by the two previous cells' outputs, global pool, linear classifier."""

    def __init__(self, genotype: Genotype, net: DartsNetwork, num_classes: int, in_channels: int):
        super().__init__()
        c_stem = net.stem_multiplier * net.channels
        self.stem = nn.Sequential(nn.Conv2d(in_channels, c_stem, 3, padding=1, bias=False), nn.BatchNorm2d(c_stem))
        c_pp, c_p, c = c_stem, c_stem, net.channels
        cells, reduction_prev = [], False
        for i in range(net.layers):
            reduction = i in _reduction_layers(net.layers)
            c = c * 2 if reduction else c
            pairs, concat = (genotype.reduce, genotype.reduce_concat) if reduction else (genotype.normal, genotype.normal_concat)
            cells.append(_Cell(pairs, concat, c_pp, c_p, c, reduction, reduction_prev))
            reduction_prev = reduction
            c_pp, c_p = c_p, len(concat) * c
        self.cells = nn.ModuleList(cells)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c_p, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s0 = s1 = self.stem(x)
        for cell in self.cells:
            s0, s1 = s1, cell(s0, s1)
        return self.classifier(self.pool(s1).flatten(1))


class _SearchCell(nn.Module):
    """A DARTS search cell: a MixedOp on every edge from every earlier state to every node."""

    def __init__(self, op_names, nodes: int, c_pp: int, c_p: int, c: int, reduction: bool, reduction_prev: bool):
        super().__init__()
        self.reduction, self.nodes = reduction, nodes
        if reduction_prev:
            self.preprocess0 = FactorizedReduce(c_pp, c, affine=False)
        else:
            self.preprocess0 = ReLUConvBN(c_pp, c, 1, 1, 0, affine=False)
        self.preprocess1 = ReLUConvBN(c_p, c, 1, 1, 0, affine=False)
        self.edges = nn.ModuleList(
            MixedOp(DARTS_OPS, op_names, c, 2 if reduction and j < 2 else 1, pool_bn=True)
            for n in range(2, 2 + nodes)
            for j in range(n)
        )

    def forward(self, s0: torch.Tensor, s1: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        states, offset = [self.preprocess0(s0), self.preprocess1(s1)], 0
        for _ in range(self.nodes):
            node = sum(self.edges[offset + j](h, weights[offset + j]) for j, h in enumerate(states))
            offset += len(states)
            states.append(node)
        return torch.cat(states[2:], dim=1)


class DartsSupernet(Supernet):
    """DARTS's search network: one alpha matrix (edges x ops) for all normal cells and one for
    all reduction cells."""

    def __init__(self, op_names, nodes: int, net: DartsNetwork, num_classes: int, in_channels: int):
        super().__init__()
        self.op_names, self.nodes = list(op_names), nodes
        c_stem = net.stem_multiplier * net.channels
        self.stem = nn.Sequential(nn.Conv2d(in_channels, c_stem, 3, padding=1, bias=False), nn.BatchNorm2d(c_stem))
        c_pp, c_p, c = c_stem, c_stem, net.channels
        cells, reduction_prev = [], False
        for i in range(net.layers):
            reduction = i in _reduction_layers(net.layers)
            c = c * 2 if reduction else c
            cells.append(_SearchCell(self.op_names, nodes, c_pp, c_p, c, reduction, reduction_prev))
            reduction_prev = reduction
            c_pp, c_p = c_p, nodes * c
        self.cells = nn.ModuleList(cells)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c_p, num_classes)
        edges = sum(range(2, 2 + nodes))
        self.alpha_normal = nn.Parameter(1e-3 * torch.randn(edges, len(self.op_names)))
        self.alpha_reduce = nn.Parameter(1e-3 * torch.randn(edges, len(self.op_names)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w_normal = torch.softmax(self.alpha_normal, dim=-1)
        w_reduce = torch.softmax(self.alpha_reduce, dim=-1)
        s0 = s1 = self.stem(x)
        for cell in self.cells:
            s0, s1 = s1, cell(s0, s1, w_reduce if cell.reduction else w_normal)
        return self.classifier(self.pool(s1).flatten(1))


@SPACE_FAMILIES.register("darts")
class DartsSpace(CellSpace):
    """DARTS: per cell and node, two distinct inputs and one op (not ``none``) on each."""

    Config = DartsConfig
    config: DartsConfig

    @property
    def ops(self) -> tuple[str, ...]:
        """The ops a genotype may use: the configured ops except ``none`` (supernet only)."""
        return tuple(op for op in self.config.ops if op != "none")

    @property
    def _node_ids(self) -> range:
        return range(2, 2 + self.config.nodes)

    def _input_pairs(self, n: int) -> list[tuple[int, int]]:
        return list(itertools.combinations(range(n), 2))

    def choices(self) -> list[tuple[str, list[Any]]]:
        ops = list(self.ops)
        out = []
        for cell in CELLS:
            for n in self._node_ids:
                out += [
                    (f"{cell}.node{n}.inputs", self._input_pairs(n)),
                    (f"{cell}.node{n}.first_op", ops),  # op on the lower-numbered input
                    (f"{cell}.node{n}.second_op", ops),
                ]
        return out

    def from_choices(self, indices: Sequence[int]) -> Genotype:
        indices = iter(self._check_indices(indices))
        ops = self.ops
        cells = {}
        for cell in CELLS:
            pairs = []
            for n in self._node_ids:
                a, b = self._input_pairs(n)[next(indices)]
                pairs += [(ops[next(indices)], a), (ops[next(indices)], b)]
            cells[cell] = pairs
        concat = list(self._node_ids)
        return Genotype(cells["normal"], concat, cells["reduce"], concat)

    def to_choices(self, arch: Genotype) -> list[int]:
        self._check(arch)
        out = []
        for cell in CELLS:
            pairs = getattr(arch, cell)
            for k, n in enumerate(self._node_ids):
                (op_a, a), (op_b, b) = pairs[2 * k], pairs[2 * k + 1]
                out += [self._input_pairs(n).index((a, b)), self.ops.index(op_a), self.ops.index(op_b)]
        return out

    def _check(self, arch: Genotype) -> None:
        """ValueError naming the first thing ``arch`` gets wrong for this space."""
        if not isinstance(arch, Genotype):
            raise TypeError(f"darts space expects a Genotype, got {type(arch).__name__}: {arch!r}")
        expected_concat = tuple(self._node_ids)
        for cell in CELLS:
            pairs = getattr(arch, cell)
            if len(pairs) != 2 * self.config.nodes:
                raise ValueError(f"darts: {cell} has {len(pairs)} (op, input) pairs; a cell with "
                                 f"{self.config.nodes} nodes needs {2 * self.config.nodes}")
            for k, n in enumerate(self._node_ids):
                (op_a, a), (op_b, b) = pairs[2 * k], pairs[2 * k + 1]
                for op, j in ((op_a, a), (op_b, b)):
                    if op not in self.ops:
                        hint = " ('none' is a supernet-only op)" if op == "none" else ""
                        raise ValueError(f"darts: {cell} node {n} has op {op!r}; allowed: {', '.join(self.ops)}{hint}")
                    if not 0 <= j < n:
                        raise ValueError(f"darts: {cell} node {n} takes input {j}; allowed inputs are 0..{n - 1}")
                if a == b:
                    raise ValueError(f"darts: {cell} node {n} takes input {a} twice; its two inputs must differ")
            if getattr(arch, f"{cell}_concat") != expected_concat:
                raise ValueError(f"darts: {cell}_concat is {list(getattr(arch, cell + '_concat'))}; "
                                 f"this space concatenates all nodes {list(expected_concat)}")

    def encode(self, arch: Genotype) -> np.ndarray:
        """Per cell, per possible edge (node n <- state j), a one-hot of its op or zeros if the
        edge is absent: the same position always means the same edge, which suits predictors."""
        self._check(arch)
        k_ops = len(self.ops)
        parts = []
        for cell in CELLS:
            chosen = {}
            pairs = getattr(arch, cell)
            for k, n in enumerate(self._node_ids):
                for op, j in pairs[2 * k : 2 * k + 2]:
                    chosen[(n, j)] = self.ops.index(op)
            for n in self._node_ids:
                for j in range(n):
                    one_hot = np.zeros(k_ops, dtype=np.float32)
                    if (n, j) in chosen:
                        one_hot[chosen[(n, j)]] = 1.0
                    parts.append(one_hot)
        return np.concatenate(parts)

    def parse(self, text: str) -> Genotype:
        expected = ("expected a DARTS genotype 'Genotype(normal=[(op, input), ...], normal_concat=[2, 3, ...], "
                    "reduce=[...], reduce_concat=[...])'")
        try:
            call = ast.parse(str(text).strip(), mode="eval").body
        except SyntaxError:
            raise ValueError(f"bad darts architecture {text!r}: not a Python-style expression; {expected}") from None
        if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Name) and call.func.id == "Genotype"
                and not call.args):
            raise ValueError(f"bad darts architecture {text!r}: {expected}")
        fields = {kw.arg: kw.value for kw in call.keywords}
        wanted = ["normal", "normal_concat", "reduce", "reduce_concat"]
        if sorted(fields, key=str) != sorted(wanted):
            raise ValueError(f"bad darts architecture {text!r}: has fields {sorted(fields, key=str)}, "
                             f"needs exactly {wanted}; {expected}")
        try:
            genotype = Genotype(**{k: _literal(v) for k, v in fields.items()})
            self._check(genotype)
        except (ValueError, TypeError, SyntaxError) as err:
            raise ValueError(f"bad darts architecture {text!r}: {err}") from None
        return genotype

    def build(self, arch: Genotype, num_classes: int, in_channels: int) -> DartsNet:
        self._check(arch)
        return DartsNet(arch, self.config.network, num_classes, in_channels)

    def supernet(self, num_classes: int, in_channels: int) -> DartsSupernet:
        return DartsSupernet(self.config.ops, self.config.nodes, self.config.supernet, num_classes, in_channels)

    def derive(self, supernet: DartsSupernet) -> Genotype:
        """DARTS's rule: per node keep the two incoming edges whose strongest non-``none`` op
        has the largest softmax weight, each with that op."""
        if not isinstance(supernet, DartsSupernet) or supernet.op_names != list(self.config.ops) \
                or supernet.nodes != self.config.nodes:
            raise ValueError("derive needs a supernet made by this darts space's supernet()")
        cells = {}
        for cell in CELLS:
            weights = torch.softmax(getattr(supernet, f"alpha_{cell}").detach(), dim=-1)
            if "none" in supernet.op_names:
                weights[:, supernet.op_names.index("none")] = -1.0  # never the kept op
            best_w, best_k = weights.max(dim=-1)
            pairs, offset = [], 0
            for n in self._node_ids:
                strongest = sorted(range(n), key=lambda j: -best_w[offset + j].item())[:2]
                pairs += [(supernet.op_names[best_k[offset + j].item()], j) for j in strongest]
                offset += n
            cells[cell] = pairs
        concat = list(self._node_ids)
        return Genotype(cells["normal"], concat, cells["reduce"], concat)
