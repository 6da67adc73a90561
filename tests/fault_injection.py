"""Test-only faults in candidate training: a search-space family registered from the tests.

``faulty-nb201`` is the NAS-Bench-201 space plus a ``faults`` setting naming architectures (canonical
strings) whose networks misbehave at a given training step:

* ``raise``: the forward pass raises (a crashing candidate, the same on every retry);
* ``nan``: the network outputs NaN from that step on (a diverging candidate);
* ``kill``: the worker process running the candidate kills itself with SIGKILL, as the kernel's
  out-of-memory killer would, once (a file at ``marker`` records that it happened); its retry runs
  normally.

Steps count optimiser steps (training forward passes with gradients), kept in a buffer of the
model so a candidate resumed from a checkpoint keeps counting where it was. The family never ships
with frugalnas: the tests import this module (which registers it) and have Ray pickle it by value
(:func:`ship_to_ray_workers`), so the Ray workers that train candidates get it without importing it.
"""
from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Literal, Optional

import torch
from torch import nn

from frugalnas.spaces.base import SPACE_FAMILIES, SpaceConfig
from frugalnas.spaces.nb201 import NB201Config, NB201Space


class Fault(SpaceConfig):
    kind: Literal["raise", "nan", "kill"]
    step: int  # the training step (1-based) it happens at
    marker: Optional[str] = None  # kill: a file that exists once the kill has happened


class FaultyConfig(NB201Config):
    family: Literal["faulty-nb201"] = "faulty-nb201"
    faults: dict[str, Fault] = {}


class FaultyNet(nn.Module):
    """A network wrapped to misbehave at ``fault.step``."""

    def __init__(self, net: nn.Module, fault: Fault):
        super().__init__()
        self.net, self.fault = net, fault
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        logits = self.net(images)
        if not (self.training and torch.is_grad_enabled()):  # evaluation, BatchNorm recalibration, FLOPs
            return logits
        self.steps += 1
        step, fault = int(self.steps), self.fault
        if fault.kind == "raise" and step == fault.step:
            raise RuntimeError(f"injected fault: the candidate crashed at training step {step}")
        if fault.kind == "nan" and step >= fault.step:
            return logits * float("nan")
        if fault.kind == "kill" and step == fault.step and not Path(fault.marker).exists():
            Path(fault.marker).write_text(str(os.getpid()))
            os.kill(os.getpid(), signal.SIGKILL)
        return logits


@SPACE_FAMILIES.register("faulty-nb201")
class FaultyNB201Space(NB201Space):
    Config = FaultyConfig

    def build(self, arch, num_classes: int, in_channels: int) -> nn.Module:
        net = super().build(arch, num_classes, in_channels)
        fault = self.config.faults.get(str(arch))
        return net if fault is None else FaultyNet(net, fault)


def ship_to_ray_workers() -> None:
    """Have Ray pickle this module's classes by value, so workers need not import it."""
    import sys

    import ray.cloudpickle

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
