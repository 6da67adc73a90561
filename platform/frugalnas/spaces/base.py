"""The search-space interface every family implements, and the family registry.

A space is a finite set of architectures described as a list of decisions (:meth:`Space.choices`).
In the built-in families they are independent: every combination of option indices is a valid
architecture and every architecture has exactly one such combination. Sampling, mutation, size,
enumeration (:meth:`Space.index` / :meth:`Space.at`) and the default encoding follow from that, so
a family only says what its decisions are, how an architecture is written as a string, and how it
becomes a network. A family with conditional decisions (``categorical``) says which decisions are
active given the earlier ones (:meth:`Space.decision_active`); an inactive decision has index -1 in
:meth:`Space.to_choices` and an all-zero block in :meth:`Space.encode`.

Architecture objects are immutable and hashable (frozen dataclasses), and ``str(arch)`` is their
canonical text form; ``space.parse(str(arch)) == arch``.
"""
from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Any, ClassVar, Hashable, Sequence

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict
from torch import nn

from frugalnas.registry import Registry

Arch = Hashable
"""An architecture of some space: an immutable, hashable value whose ``str`` is canonical."""

SPACE_FAMILIES: Registry[type["Space"]] = Registry("search-space family")


class SpaceConfig(BaseModel):
    """Base of each family's settings model: unknown keys are errors, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Space(ABC):
    """A search-space family instantiated with its settings (one YAML file in ``search_spaces/``).

    Subclasses set ``Config`` (a :class:`SpaceConfig` with a ``family`` literal) and register
    with ``@SPACE_FAMILIES.register("name")``.
    """

    Config: ClassVar[type[SpaceConfig]]
    #: What the built networks do: ``classification`` (logits) or ``detection`` (an ultralytics
    #: detector); a search only accepts a space whose task is the data set's.
    task: ClassVar[str] = "classification"

    def __init__(self, config: SpaceConfig | dict[str, Any] | None = None):
        if config is None:
            config = self.Config()
        elif isinstance(config, dict):
            config = self.Config.model_validate(config)
        elif not isinstance(config, self.Config):
            raise TypeError(f"{type(self).__name__} takes a {self.Config.__name__}, got {type(config).__name__}")
        self.config = config

    @property
    def family(self) -> str:
        return self.config.family

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config!r})"

    # -- decisions ---------------------------------------------------------------------------

    @abstractmethod
    def choices(self) -> list[tuple[str, list[Any]]]:
        """The decisions that define an architecture, in order: ``(name, options)`` each."""

    @abstractmethod
    def from_choices(self, indices: Sequence[int]) -> Arch:
        """The architecture picking ``options[indices[d]]`` for each decision ``d``."""

    @abstractmethod
    def to_choices(self, arch: Arch) -> list[int]:
        """The option index of each decision; inverse of :meth:`from_choices`."""

    def decision_active(self, d: int, prefix: Sequence[int]) -> bool:
        """Whether decision ``d`` exists given the option indices of the decisions before it
        (``prefix[:d]``). Always True in a space of independent decisions."""
        return True

    def _check_indices(self, indices: Sequence[int]) -> list[int]:
        """``indices`` as a list of ints, or a ValueError naming the bad position."""
        decisions = self.choices()
        indices = [int(i) for i in indices]
        if len(indices) != len(decisions):
            raise ValueError(f"{self.family}: expected {len(decisions)} choice indices, got {len(indices)}")
        for (name, options), i in zip(decisions, indices):
            if not 0 <= i < len(options):
                raise ValueError(f"{self.family}: choice {name!r} index {i} is out of range 0..{len(options) - 1}")
        return indices

    # -- search operators --------------------------------------------------------------------

    def sample(self, rng: np.random.Generator) -> Arch:
        """A uniformly random architecture (uniform per decision = uniform over the space)."""
        return self.from_choices([int(rng.integers(len(options))) for _, options in self.choices()])

    def mutate(self, arch: Arch, rng: np.random.Generator) -> Arch:
        """``arch`` with exactly one decision changed to a different option (chosen uniformly)."""
        indices = self.to_choices(arch)
        decisions = self.choices()
        open_ = [d for d, (_, options) in enumerate(decisions) if len(options) > 1]
        if not open_:
            raise ValueError(f"{self.family}: the space holds a single architecture; nothing to mutate")
        d = open_[int(rng.integers(len(open_)))]
        # Draw among the other options only, so the result always differs from the input.
        new = int(rng.integers(len(decisions[d][1]) - 1))
        indices[d] = new if new < indices[d] else new + 1
        return self.from_choices(indices)

    def encode(self, arch: Arch) -> np.ndarray:
        """A fixed-length float32 vector for predictors and controllers: one-hot per decision (all
        zeros for an inactive one)."""
        parts = []
        for (_, options), i in zip(self.choices(), self.to_choices(arch)):
            one_hot = np.zeros(len(options), dtype=np.float32)
            if i >= 0:
                one_hot[i] = 1.0
            parts.append(one_hot)
        return np.concatenate(parts)

    def size(self) -> int:
        """The number of architectures in the space."""
        return math.prod(len(options) for _, options in self.choices())

    def index(self, arch: Arch) -> int:
        """The position of ``arch`` in the space's enumeration, 0..size()-1 (mixed radix over the
        option indices, first decision slowest)."""
        index = 0
        for i, (_, options) in zip(self.to_choices(arch), self.choices()):
            index = index * len(options) + i
        return index

    def at(self, index: int) -> Arch:
        """The architecture at ``index`` of the enumeration (inverse of :meth:`index`)."""
        digits = []
        for _, options in reversed(self.choices()):
            index, digit = divmod(int(index), len(options))
            digits.append(digit)
        return self.from_choices(digits[::-1])

    # -- text form ---------------------------------------------------------------------------

    @abstractmethod
    def parse(self, text: str) -> Arch:
        """The architecture whose canonical string is ``text`` (ValueError if it is not one)."""

    # -- networks ----------------------------------------------------------------------------

    @abstractmethod
    def build(self, arch: Arch, num_classes: int, in_channels: int) -> nn.Module:
        """A freshly initialised classifier of ``(B, in_channels, H, W)`` images, H, W >= 8."""

    def check_buildable(self) -> None:
        """Raise a :class:`~frugalnas.errors.ConfigError` saying why this space cannot build networks
        (a table-only space); every built-in family can."""

    def count_params(self, arch: Arch, num_classes: int, in_channels: int) -> int:
        """Number of trainable parameters of the built network."""
        return count_params(self.build(arch, num_classes, in_channels))

    def count_flops(self, arch: Arch, num_classes: int, in_channels: int, image_size: int | tuple[int, int]) -> int:
        """Multiply-accumulates (plus bias additions) of the conv and linear layers for one
        image of ``image_size``; see :func:`count_flops`."""
        return count_flops(self.build(arch, num_classes, in_channels), in_channels, image_size)


class CellSpace(Space):
    """A cell space that also offers a weight-sharing supernet for gradient-based search."""

    @abstractmethod
    def supernet(self, num_classes: int, in_channels: int) -> nn.Module:
        """A :class:`~frugalnas.spaces.ops.Supernet` with one alpha per edge and op, initialised
        from torch's global RNG (seed it with ``torch.manual_seed`` for a reproducible start)."""

    @abstractmethod
    def derive(self, supernet: nn.Module) -> Arch:
        """The discrete architecture the supernet's alphas select."""


def count_params(module: nn.Module) -> int:
    """Number of trainable parameters of ``module``."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def count_flops(module: nn.Module, in_channels: int, image_size: int | tuple[int, int]) -> int:
    """Multiply-accumulates of every Conv2d and Linear in one forward pass of a single image.

    Counted by forward hooks, so only layers actually run are counted. The convention is
    NAS-Bench-201's (so its published FLOPs are reproduced exactly): one per multiply-accumulate
    plus one per bias addition; BatchNorm, activations, pooling and additions are left out.
    """
    height, width = (image_size, image_size) if isinstance(image_size, int) else image_size
    total = 0

    def conv_hook(layer: nn.Conv2d, inputs, output):
        nonlocal total
        kh, kw = layer.kernel_size
        per_output = (layer.in_channels // layer.groups) * kh * kw + (layer.bias is not None)
        total += output[0].numel() * per_output

    def linear_hook(layer: nn.Linear, inputs, output):
        nonlocal total
        total += output[0].numel() * (layer.in_features + (layer.bias is not None))

    handles = []
    for layer in module.modules():
        if isinstance(layer, nn.Conv2d):
            handles.append(layer.register_forward_hook(conv_hook))
        elif isinstance(layer, nn.Linear):
            handles.append(layer.register_forward_hook(linear_hook))
    was_training = module.training
    try:
        module.eval()
        with torch.no_grad():
            module(torch.zeros(1, in_channels, height, width))
    finally:
        for handle in handles:
            handle.remove()
        module.train(was_training)
    return int(total)
