"""Zero-cost proxies: scores of an untrained network, computed without any training.

``synflow`` (Tanaka et al. 2020, used as a NAS proxy by Abdelfattah et al. ICLR'21, "Zero-cost
proxies for lightweight NAS"): with every weight replaced by its absolute value and BatchNorm
removed, push an all-ones image through the network and sum |w * dR/dw| over the conv and linear
weights, R being the sum of the outputs. It measures how much signal the architecture lets through
(its "synaptic flow"); on NAS-Bench-201 CIFAR-10 it reached Spearman 0.74 over all 15,625 cells.
It needs no data, and on NAS-Bench-201 mostly repeats parameter count.

``naswot`` (Mellor et al. ICML'21, "Neural architecture search without training"): push one
minibatch of real, unlabelled images through the untrained network and record, for every ReLU,
which of its inputs are positive. Each image gets a binary code; the score is the log-determinant
of the kernel counting, for every pair of images, the units on which their codes agree. A network
whose ReLUs already tell the images apart at initialisation (codes far apart, a well-conditioned
kernel) tends to train to higher accuracy. Unlike synflow it is not a size count in disguise: it
looks at how the architecture partitions the data.
"""
from __future__ import annotations

import copy
import math

import torch
from torch import nn


def _without_batchnorm(module: nn.Module) -> nn.Module:
    for name, child in module.named_children():
        if isinstance(child, nn.modules.batchnorm._BatchNorm):
            setattr(module, name, nn.Identity())
        else:
            _without_batchnorm(child)
    return module


def synflow(model: nn.Module, in_channels: int, image_size: int) -> float:
    """The log10 synflow score of ``model`` (left unchanged; a copy is scored in float64).

    Returned as a logarithm because the raw score grows exponentially with depth and would
    overflow ordinary floats; the order of architectures is the same. An architecture whose
    output does not depend on its input at all (every path cut) scores ``-inf``.
    """
    net = _without_batchnorm(copy.deepcopy(model)).double()
    net.eval()  # dropout off; there is no BatchNorm left for the mode to matter
    with torch.no_grad():
        for parameter in net.parameters():
            parameter.abs_()
    net.zero_grad(set_to_none=True)
    output = net(torch.ones(1, in_channels, image_size, image_size, dtype=torch.float64))
    output.sum().backward()
    total = 0.0
    with torch.no_grad():
        for layer in net.modules():
            if isinstance(layer, (nn.Conv2d, nn.Linear)) and layer.weight.grad is not None:
                total += float((layer.weight * layer.weight.grad).abs().sum())
    return math.log10(total) if total > 0 else -math.inf


def naswot(model: nn.Module, images: torch.Tensor) -> float:
    """The NASWOT score of ``model`` (left unchanged; a copy is scored) on a batch of ``images``
    (N, C, H, W): ``log |K|`` with ``K[i, j]`` the number of ReLU units on which images i and j are
    on the same side of zero, summed over every ``nn.ReLU`` of the network (their inputs, as in the
    authors' code). The network runs in training mode, as in the paper: BatchNorm uses the batch's
    own statistics, since an untrained network has no running ones worth using.

    Returns ``-inf`` when the kernel is singular, e.g. two identical images in the batch or a
    network whose every ReLU sees the same sign pattern for all of them.
    """
    if images.ndim != 4 or len(images) < 2:
        raise ValueError(f"naswot needs a batch of at least 2 images (N, C, H, W), got shape {tuple(images.shape)}")
    net = copy.deepcopy(model).train()
    n = len(images)
    kernel = torch.zeros(n, n, dtype=torch.float64)

    def count_agreements(module, inputs, output):
        codes = (inputs[0].detach().reshape(n, -1) > 0).double()
        kernel.add_(codes @ codes.T + (1 - codes) @ (1 - codes).T)

    hooks = [m.register_forward_hook(count_agreements) for m in net.modules() if isinstance(m, nn.ReLU)]
    try:
        with torch.no_grad():
            net(images)
    finally:
        for hook in hooks:
            hook.remove()
    sign, logdet = torch.linalg.slogdet(kernel)
    return float(logdet) if sign > 0 else -math.inf
