"""DARTS (Liu, Simonyan & Yang, ICLR 2019) with data selection: gradient-based search on a supernet.

Bi-level data. The training split is cut in two class-stratified halves (deterministic for the
seed): the supernet's *weights* train on the weight half, its *architecture weights* (alphas) on
the arch half. Each epoch the selector (any policy, built over the weight-half ids only) plans
which weight-half images to train on; the per-image confidence and correctness of the weight-step
forward passes go back to ``selector.observe``, so DDS-NAS can mine hard examples. The arch steps
draw a same-size random sample of the arch half each epoch (counted in ``arch_images_processed``).

One search step, as in DARTS's ``train_search.py``: an architecture step on an arch batch, then a
weight step on a weight batch.

* first order: the alphas follow the gradient of the arch-batch loss at the current weights;
* second order ("unrolled"): the alphas follow the gradient of the arch-batch loss at the weights
  after one virtual SGD step, ``w' = w - lr * (momentum * buf + dL_train/dw + wd * w)``; its
  second-order term ``-lr * d2L_train/(dalpha dw) . dL_arch/dw'`` is the finite difference
  ``(dL_train/dalpha(w + R v) - dL_train/dalpha(w - R v)) / 2R`` with ``v = dL_arch/dw'`` and
  ``R = r / |v|``.

The virtual passes (unrolled weights, finite differences) run through ``torch.func.functional_call``
on copies of the BatchNorm buffers, like DARTS's separate unrolled model: only the real weight
step moves the running statistics.

Distributed data parallel, by all-reduce hook rather than a DDP wrapper. Every step function takes
``all_reduce(tensor)``, which must sum a flat tensor in place over all workers (identity for one
worker; :func:`torch_all_reduce` under ``torch.distributed``, e.g. gloo in Ray Train). Step k's
global batch is the same whatever the number of workers (:func:`worker_batches`); each worker
takes its class-balanced share, sums per-image losses, and gradients, image counts and metrics
travel in one flat buffer that is divided by the global count. So N workers take the step one
worker would take on the whole batch, except for BatchNorm: by default (as DARTS on one device)
each worker normalises with its own share's statistics, which changes the search measurably;
``sync_batchnorm`` normalises over the global batch (:class:`GlobalBatchNorm2d`), and then 1 and
N workers differ by float summation order only (first order: 1.5e-7 in the alphas after 3
epochs; second order amplifies it, since the finite difference straddles ReLU kinks: measured
1.5e-2 after 3 epochs, same derived cell). DDP's reducer is not used because the second-order
step needs ``autograd.grad`` through functional calls and finite-difference passes, which DDP's
backward hooks do not cover.

What keeps the replicas identical (alpha drift between workers is a known failure of DDP DARTS
ports): identical initialisation (seeded), all-reduced weight *and* alpha gradients (so the same
Adam and SGD steps everywhere), and every random choice (subset plan, arch sample) made by
identical replicas from identical seeds, not per worker. Per-image hardness: *every worker holds
an identical selector replica*; the results of all workers are gathered (each worker fills its
images' slots of a plan-length vector, zeros elsewhere, and the vectors are summed) and every
replica observes the same full epoch, so all replicas plan the same next epoch. Nothing is
broadcast. A fingerprint check after every epoch raises :class:`ReplicaDriftError` if the
parameters or plans of the workers differ at all.

Plain PyTorch; no Ray here (see :mod:`frugalnas.runtime.darts_trainer`).
"""
from __future__ import annotations

import copy
import hashlib
import numbers
import time
from dataclasses import asdict, dataclass, fields
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.model_selection import train_test_split
from torch import nn
from torch.func import functional_call

from frugalnas.config import SelectionConfig
from frugalnas.data.shards import curriculum_shards
from frugalnas.selection.base import Selector
from frugalnas.selection.factory import selector_from_settings
from frugalnas.spaces.base import CellSpace
from frugalnas.train.classify import cosine_lr

AllReduce = Callable[[torch.Tensor], None]
"""Sums a flat tensor in place over all workers (all workers call it with the same shape)."""

Loader = Callable[[np.ndarray], tuple[torch.Tensor, torch.Tensor]]
"""``load(ids) -> (images (N, C, H, W) float in [0, 1], labels (N,) int64)``, rows in ``ids`` order."""


def local_all_reduce(tensor: torch.Tensor) -> None:
    """One worker: the sum over workers is the tensor itself."""


def torch_all_reduce(tensor: torch.Tensor) -> None:
    """Sum over the default ``torch.distributed`` process group (gloo on CPU, NCCL on GPU)."""
    torch.distributed.all_reduce(tensor, op=torch.distributed.ReduceOp.SUM)


class ReplicaDriftError(RuntimeError):
    """The workers' supernets, alphas or plans are no longer identical."""


# ---------------------------------------------------------------- settings


@dataclass(frozen=True)
class DartsSettings:
    """Search hyper-parameters; defaults are DARTS's CIFAR-10 search settings.

    ``batch_size`` is the *global* batch: with N workers each takes ``batch_size / N`` images per
    step, so 1 and N workers follow the same schedule.
    """

    epochs: int = 50
    batch_size: int = 64
    order: int = 1  # 1: first-order DARTS, 2: second-order (unrolled)
    lr: float = 0.025  # weights: SGD with momentum, cosine-annealed to lr_min
    lr_min: float = 0.001
    momentum: float = 0.9
    weight_decay: float = 3e-4
    grad_clip: float = 5.0
    arch_lr: float = 3e-4  # alphas: Adam
    arch_betas: tuple[float, float] = (0.5, 0.999)
    arch_weight_decay: float = 1e-3
    unroll_epsilon: float = 0.01  # DARTS's r: finite-difference step R = r / |dL_arch/dw'|
    arch_fraction: float = 0.5  # share of the training split that trains the alphas
    restart_lr_on_update: bool = True  # DDS-NAS DARTS port: restart the cosine cycle after a subset update
    sync_batchnorm: bool = False  # BatchNorm statistics over the global batch (see GlobalBatchNorm2d)
    seed: int = 0

    def __post_init__(self):
        for f in fields(self):  # types first, so a YAML string fails with its name, not a TypeError
            value, kind = getattr(self, f.name), type(f.default)
            ok = {bool: isinstance(value, bool),
                  int: isinstance(value, numbers.Integral) and not isinstance(value, bool),
                  float: isinstance(value, numbers.Real) and not isinstance(value, bool),
                  tuple: isinstance(value, (tuple, list)) and all(isinstance(v, numbers.Real) for v in value)}[kind]
            if not ok:
                what = {bool: "true or false", int: "an integer", float: "a number", tuple: "a list of numbers"}[kind]
                raise ValueError(f"DARTS setting {f.name}={value!r} must be {what}")
            if kind is float:
                object.__setattr__(self, f.name, float(value))
            elif kind is int:
                object.__setattr__(self, f.name, int(value))
        object.__setattr__(self, "arch_betas", tuple(float(b) for b in self.arch_betas))
        checks = [
            ("epochs", isinstance(self.epochs, int) and self.epochs >= 1, "an integer >= 1"),
            ("batch_size", isinstance(self.batch_size, int) and self.batch_size >= 1, "an integer >= 1"),
            ("order", self.order in (1, 2), "1 (first order) or 2 (second order, unrolled)"),
            ("lr", self.lr > 0, "> 0"),
            ("lr_min", 0 <= self.lr_min <= self.lr, "between 0 and lr"),
            ("momentum", 0 <= self.momentum < 1, "in [0, 1)"),
            ("weight_decay", self.weight_decay >= 0, ">= 0"),
            ("grad_clip", self.grad_clip > 0, "> 0"),
            ("arch_lr", self.arch_lr > 0, "> 0"),
            ("arch_betas", len(self.arch_betas) == 2 and all(0 <= b < 1 for b in self.arch_betas),
             "two numbers in [0, 1)"),
            ("arch_weight_decay", self.arch_weight_decay >= 0, ">= 0"),
            ("unroll_epsilon", self.unroll_epsilon > 0, "> 0"),
            ("arch_fraction", 0 < self.arch_fraction < 1, "in (0, 1)"),
            ("seed", isinstance(self.seed, int) and self.seed >= 0, "an integer >= 0"),
        ]
        for name, ok, allowed in checks:
            if not ok:
                raise ValueError(f"DARTS setting {name}={getattr(self, name)!r} is invalid; allowed: {allowed}")

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "DartsSettings":
        """Settings from a mapping (YAML); an unknown key fails naming the allowed ones."""
        allowed = [f.name for f in fields(cls)]
        unknown = sorted(set(values) - set(allowed))
        if unknown:
            raise ValueError(f"unknown DARTS setting(s) {', '.join(unknown)}; allowed: {', '.join(allowed)}")
        return cls(**values)

    def to_dict(self) -> dict:
        out = asdict(self)
        out["arch_betas"] = list(self.arch_betas)
        return out


# ---------------------------------------------------------------- bi-level split


@dataclass(frozen=True)
class BilevelSplit:
    """The two halves of the training split: weights train on one, alphas on the other."""

    weight_ids: np.ndarray
    weight_labels: np.ndarray
    arch_ids: np.ndarray
    arch_labels: np.ndarray

    def fingerprint(self) -> str:
        parts = (self.weight_ids, self.weight_labels, self.arch_ids, self.arch_labels)
        return hashlib.sha256(b"".join(np.ascontiguousarray(p, dtype=np.int64).tobytes() for p in parts)).hexdigest()[:16]


def bilevel_split(train_ids, train_labels, *, arch_fraction: float = 0.5, seed: int = 0) -> BilevelSplit:
    """Split the training ids into a weight half and an arch half, stratified by class and
    deterministic for ``seed``; each half is returned in ascending id order."""
    ids = np.asarray(train_ids, dtype=np.int64)
    labels = np.asarray(train_labels, dtype=np.int64)
    if ids.ndim != 1 or ids.shape != labels.shape or len(ids) < 2:
        raise ValueError(f"train ids {ids.shape} and labels {labels.shape} must be 1-D, equally long, >= 2 images")
    if len(np.unique(ids)) != len(ids):
        raise ValueError("train ids must be unique")
    classes, counts = np.unique(labels, return_counts=True)
    if counts.min() < 2:
        raise ValueError(f"class {classes[counts.argmin()]} has {counts.min()} training image(s); a bi-level "
                         "split needs at least 2 per class (one for the weights, one for the alphas)")
    order = np.argsort(ids)  # the split must not depend on the order the ids came in
    weight, arch, weight_y, arch_y = train_test_split(
        ids[order], labels[order], test_size=arch_fraction, stratify=labels[order], random_state=seed)
    w, a = np.argsort(weight), np.argsort(arch)
    return BilevelSplit(weight[w], weight_y[w], arch[a], arch_y[a])


# the experiment's selection section, whatever it holds: a hand-kept copy of its keys went stale once
SELECTION_KEYS = tuple(SelectionConfig.model_fields)


def selector_for_weight_half(split: BilevelSplit, selection: Mapping[str, Any], *, seed: int, total_epochs: int,
                             latents: tuple[np.ndarray, np.ndarray] | None = None) -> Selector:
    """The selector of ``selection`` (keys as the experiment's ``selection:`` section) over the
    weight half only, so the alphas' images can never enter a weight batch."""
    unknown = sorted(set(selection) - set(SELECTION_KEYS))
    if unknown:
        raise ValueError(f"unknown selection setting(s) {', '.join(unknown)}; allowed: {', '.join(SELECTION_KEYS)}")
    options = dict(selection)
    policy = options.pop("policy", "dds")
    if "subset_size" not in options:
        options["subset_size"] = len(split.weight_ids)
    return selector_from_settings(policy, split.weight_ids, split.weight_labels, seed=seed, total_epochs=total_epochs,
                                  latents=latents, **options)


# ---------------------------------------------------------------- global-batch BatchNorm


class _AllReduceSum(torch.autograd.Function):
    """A differentiable sum over workers: the gradient of a sum is the sum of the gradients."""

    @staticmethod
    def forward(ctx, tensor, all_reduce):
        ctx.all_reduce = all_reduce
        out = tensor.clone()
        all_reduce(out)
        return out

    @staticmethod
    def backward(ctx, grad):
        grad = grad.contiguous().clone()
        ctx.all_reduce(grad)
        return grad, None


class GlobalBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm whose training-mode statistics cover the global batch of all workers.

    With per-worker statistics, N workers normalise each share of a step differently from one
    worker on the whole batch, and the searches drift apart (measured on the tiny digits search:
    cosine 0.85 between the alpha trajectories of 1 and 2 workers, and a different op on one of
    six edges). Summing the per-channel sums through ``all_reduce`` (forward and backward, like
    ``torch.nn.SyncBatchNorm``, which is CUDA-only) makes N workers compute what one worker would,
    and keeps the running statistics identical on every worker. Costs two all-reduces per layer
    per forward and per backward. Same state_dict keys as ``nn.BatchNorm2d``.
    """

    def __init__(self, bn: nn.BatchNorm2d, all_reduce: AllReduce):
        super().__init__(bn.num_features, bn.eps, bn.momentum, bn.affine, bn.track_running_stats)
        self.load_state_dict(bn.state_dict())
        self.all_reduce = all_reduce

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return super().forward(x)
        dims, shape = (0, 2, 3), (1, -1, 1, 1)
        count = torch.full((1,), float(x.numel() // max(1, x.shape[1])), dtype=x.dtype, device=x.device)
        sums = _AllReduceSum.apply(torch.cat([x.sum(dims), count]), self.all_reduce)
        n = sums[-1].clamp(min=1)
        mean = sums[:-1] / n
        centred = x - mean.view(shape)
        var = _AllReduceSum.apply((centred * centred).sum(dims), self.all_reduce) / n  # two passes: stable
        y = centred * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.mul_(1 - m).add_(mean, alpha=m)
                self.running_var.mul_(1 - m).add_(var * n / (n - 1).clamp(min=1), alpha=m)
        return y


def use_global_batchnorm(module: nn.Module, all_reduce: AllReduce) -> nn.Module:
    """Replace every ``BatchNorm2d`` in ``module`` by a :class:`GlobalBatchNorm2d` (in place)."""
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d) and not isinstance(child, GlobalBatchNorm2d):
            setattr(module, name, GlobalBatchNorm2d(child, all_reduce).to(child.running_mean.device))
        else:
            use_global_batchnorm(child, all_reduce)
    return module


def _lockstep(supernet: nn.Module) -> bool:
    """Whether every worker must run every pass (global BatchNorm all-reduces inside the passes),
    even on an empty share of a batch."""
    flag = getattr(supernet, "_frugal_lockstep", None)
    if flag is None:
        flag = any(isinstance(m, GlobalBatchNorm2d) for m in supernet.modules())
        supernet._frugal_lockstep = flag
    return flag


# ---------------------------------------------------------------- step functions


def _reduce(tensors: Sequence[torch.Tensor], all_reduce: AllReduce) -> list[torch.Tensor]:
    """Sum several tensors over workers with one all-reduce of a flat buffer (of the first's dtype)."""
    flat = torch.cat([t.detach().reshape(-1).to(tensors[0].dtype) for t in tensors])
    all_reduce(flat)
    out, start = [], 0
    for t in tensors:
        out.append(flat[start : start + t.numel()].view_as(t).to(t.dtype))
        start += t.numel()
    return out


def _split_params(supernet: nn.Module) -> tuple[list[str], list[nn.Parameter], list[nn.Parameter]]:
    names = [n for n, _ in supernet.named_parameters() if not n.startswith("alpha")]
    return names, supernet.weight_parameters(), supernet.arch_parameters()


def _virtual_loss(supernet: nn.Module, weights: dict[str, torch.Tensor], images: torch.Tensor,
                  labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed loss and logits of the supernet with ``weights`` in place of its own, on copies of
    its buffers (so the virtual pass leaves the BatchNorm running statistics alone)."""
    buffers = {n: b.clone() for n, b in supernet.named_buffers()}
    logits = functional_call(supernet, {**weights, **buffers}, (images,))
    return F.cross_entropy(logits, labels, reduction="sum"), logits


def _grads(loss: torch.Tensor | None, inputs: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """d loss / d inputs, or zeros when this worker has no images in the step."""
    if loss is None:
        return [torch.zeros_like(t) for t in inputs]
    # allow_unused: a supernet may not use every alpha (a DARTS stack of reduction cells only)
    grads = torch.autograd.grad(loss, inputs, allow_unused=True)
    return [torch.zeros_like(t) if g is None else g for t, g in zip(inputs, grads)]


def _stats(loss: torch.Tensor | None, logits: torch.Tensor | None, labels: torch.Tensor,
           like: torch.Tensor) -> torch.Tensor:
    """[images, summed loss, correct] of this worker's share of a step (dtype and device of ``like``)."""
    if loss is None:
        return torch.zeros(3, dtype=like.dtype, device=like.device)
    correct = (logits.detach().argmax(1) == labels).sum()
    return torch.stack([torch.tensor(float(len(labels)), dtype=torch.float64), loss.detach().cpu().double(),
                        correct.cpu().double()]).to(like)


def arch_step(supernet: nn.Module, arch_optimizer: torch.optim.Optimizer, weight_optimizer: torch.optim.SGD,
              train_batch: tuple[torch.Tensor, torch.Tensor], arch_batch: tuple[torch.Tensor, torch.Tensor], *,
              order: int, lr: float, unroll_epsilon: float = 0.01,
              all_reduce: AllReduce = local_all_reduce) -> dict[str, float]:
    """One architecture step (first or second order); returns the global arch-batch
    ``{images, loss_sum, correct}`` (for second order, of the unrolled weights the gradient is taken at).

    ``train_batch`` / ``arch_batch`` are this worker's share of the global batches (may be empty);
    ``lr`` is the weights' current learning rate (the virtual step's size, second order only).
    """
    names, weights, alphas = _split_params(supernet)
    like = alphas[0]
    lockstep = _lockstep(supernet)
    xa, ya = arch_batch
    if order == 1:
        loss = logits = None
        if len(ya) or lockstep:
            logits = supernet(xa)
            loss = F.cross_entropy(logits, ya, reduction="sum")
        *d_alpha, stats = _reduce([*_grads(loss, alphas), _stats(loss, logits, ya, like)], all_reduce)
        n = stats[0].clamp(min=1)
        d_alpha = [g / n for g in d_alpha]
    elif order == 2:
        xt, yt = train_batch
        k = len(weights)
        # 1. the virtual SGD step w' = w - lr * (momentum * buf + dL_train/dw + wd * w), global dL_train/dw
        loss = None
        if len(yt) or lockstep:
            loss, _ = _virtual_loss(supernet, dict(zip(names, weights)), xt, yt)
        *d_w, n_train = _reduce([*_grads(loss, weights), torch.full((1,), float(len(yt))).to(like)], all_reduce)
        n_train = n_train.clamp(min=1)
        group = weight_optimizer.param_groups[0]
        momentum, wd = group["momentum"], group["weight_decay"]
        unrolled = {}
        with torch.no_grad():
            for name, w, g in zip(names, weights, d_w):
                buf = weight_optimizer.state.get(w, {}).get("momentum_buffer")
                step = g / n_train + wd * w + (momentum * buf if buf is not None else 0.0)
                unrolled[name] = (w - lr * step).requires_grad_(True)
        # 2. arch loss at w': gradients for the alphas and for w'
        loss = logits = None
        if len(ya) or lockstep:
            loss, logits = _virtual_loss(supernet, unrolled, xa, ya)
        grads = _grads(loss, [*alphas, *unrolled.values()])
        reduced = _reduce([*grads, _stats(loss, logits, ya, like)], all_reduce)
        stats = reduced[-1]
        n = stats[0].clamp(min=1)
        d_alpha = [g / n for g in reduced[: len(alphas)]]
        v = [g / n for g in reduced[len(alphas) : len(alphas) + k]]
        # 3. finite-difference Hessian-vector product d2L_train/(dalpha dw) . v
        norm = torch.sqrt(sum((t * t).sum() for t in v))
        radius = unroll_epsilon / norm.clamp(min=1e-12)
        diff = [torch.zeros_like(a) for a in alphas]
        if len(yt) or lockstep:
            for sign in (1.0, -1.0):
                with torch.no_grad():
                    shifted = {name: w + sign * radius * t for name, w, t in zip(names, weights, v)}
                loss, _ = _virtual_loss(supernet, shifted, xt, yt)
                diff = [d + sign * g for d, g in zip(diff, _grads(loss, alphas))]
        hvp = [d / (2 * radius * n_train) for d in _reduce(diff, all_reduce)]
        d_alpha = [g - lr * h for g, h in zip(d_alpha, hvp)]
    else:
        raise ValueError(f"order must be 1 (first order) or 2 (second order), got {order!r}")
    arch_optimizer.zero_grad(set_to_none=True)
    for a, g in zip(alphas, d_alpha):
        a.grad = g.detach().clone()
    arch_optimizer.step()
    return {"images": float(stats[0]), "loss_sum": float(stats[1]), "correct": float(stats[2])}


def weight_step(supernet: nn.Module, weight_optimizer: torch.optim.Optimizer,
                batch: tuple[torch.Tensor, torch.Tensor], *, grad_clip: float = 5.0,
                all_reduce: AllReduce = local_all_reduce) -> tuple[dict[str, float], torch.Tensor, torch.Tensor]:
    """One SGD step of the weights on the global batch (this worker's share is ``batch``).

    Returns the global ``{images, loss_sum, correct}`` and this worker's per-image softmax
    confidence of the predicted class and correctness (the selector's hardness signal).
    """
    images, labels = batch
    _, weights, _ = _split_params(supernet)
    loss = logits = None
    if len(labels) or _lockstep(supernet):
        logits = supernet(images)
        loss = F.cross_entropy(logits, labels, reduction="sum")
    *grads, stats = _reduce([*_grads(loss, weights), _stats(loss, logits, labels, weights[0])], all_reduce)
    n = stats[0].clamp(min=1)
    weight_optimizer.zero_grad(set_to_none=True)
    for w, g in zip(weights, grads):
        w.grad = g / n
    nn.utils.clip_grad_norm_(weights, grad_clip)
    weight_optimizer.step()
    if logits is None or not len(labels):
        return ({"images": float(stats[0]), "loss_sum": float(stats[1]), "correct": float(stats[2])},
                torch.zeros(0), torch.zeros(0, dtype=torch.bool))
    with torch.no_grad():
        confidence, predicted = F.softmax(logits, dim=1).max(dim=1)
    return ({"images": float(stats[0]), "loss_sum": float(stats[1]), "correct": float(stats[2])},
            confidence.cpu(), (predicted == labels).cpu())


# ---------------------------------------------------------------- the search


def worker_batches(ids, labels, batch_size: int, num_workers: int) -> list[list[np.ndarray]]:
    """Per worker, its share of every global batch: ``out[rank][k]``.

    ``ids`` (in curriculum order) are cut into global batches of ``batch_size`` first, and each
    batch is dealt to the workers with :func:`~frugalnas.data.shards.curriculum_shards`. So step k
    trains on the same images whatever the number of workers (1 and N workers agree), every
    worker's share of a step is class-balanced, and every worker's epoch shard (its shares, in
    order) follows the curriculum from easy to hard. Every worker gets the same number of
    batches, possibly empty at the end.
    """
    ids = np.asarray(ids, dtype=np.int64)
    labels = np.asarray(labels, dtype=np.int64)
    out: list[list[np.ndarray]] = [[] for _ in range(num_workers)]
    for start in range(0, len(ids), batch_size):
        shards = curriculum_shards(ids[start : start + batch_size], labels[start : start + batch_size], num_workers)
        for rank, shard in enumerate(shards):
            out[rank].append(shard)
    return out


def alphas_digest(supernet: nn.Module) -> str:
    """A short hash of the architecture weights, to compare replicas or runs bit for bit."""
    data = b"".join(a.detach().cpu().contiguous().numpy().tobytes() for a in supernet.arch_parameters())
    return hashlib.sha256(data).hexdigest()[:16]


class DartsSearch:
    """A DARTS search with a data selector, epoch by epoch; checkpointable between epochs.

    ``rank`` / ``world_size`` / ``all_reduce`` make it one replica of a data-parallel search:
    every replica is built the same way (same seed, same selector) and runs :meth:`run_epoch`
    in lockstep; ``load`` then reads only this worker's shard.

    Each epoch's record (also kept in :attr:`history`): ``epoch``, ``trained`` (False on a DDS
    update epoch), ``updated``, ``replaced``, ``lr``, ``images`` (this epoch's weight images),
    ``train_loss`` / ``train_accuracy`` (weight-step forward passes), ``arch_loss`` /
    ``arch_accuracy`` (the arch-half batches of the arch steps; for second order at the unrolled
    weights), ``images_processed`` (the selector's count), ``arch_images_processed``,
    ``subset_updates``, ``genotype`` (``str(space.derive(supernet))``), ``alphas_digest``,
    ``seconds``. All are global (summed over workers), so every replica's record is the same
    except ``seconds``.
    """

    def __init__(self, space: CellSpace, num_classes: int, in_channels: int, split: BilevelSplit,
                 selector: Selector, settings: DartsSettings, *, rank: int = 0, world_size: int = 1,
                 all_reduce: AllReduce | None = None, device: str | torch.device = "cpu"):
        if not isinstance(space, CellSpace):
            raise TypeError(f"DARTS needs a cell space with a supernet (nb201, darts), got {type(space).__name__}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in 0..{world_size - 1}")
        if world_size > 1 and all_reduce is None:
            raise ValueError(f"world_size={world_size} needs an all_reduce hook (e.g. torch_all_reduce)")
        if settings.batch_size % world_size:
            raise ValueError(f"batch_size {settings.batch_size} (the global batch) must be divisible by the "
                             f"number of workers {world_size}")
        if not np.array_equal(np.sort(selector.train_ids), split.weight_ids):
            raise ValueError("the selector must be built over exactly the weight half's ids "
                             "(see selector_for_weight_half); the arch half must never enter a weight batch")
        self.space, self.split, self.selector, self.settings = space, split, selector, settings
        self.rank, self.world_size = rank, world_size
        self.all_reduce = all_reduce or local_all_reduce
        self.device = torch.device(device)
        with torch.random.fork_rng(devices=[]):  # identical start on every worker, global RNG untouched
            torch.manual_seed(settings.seed)
            self.supernet = space.supernet(num_classes, in_channels).to(self.device)
        if settings.sync_batchnorm:
            use_global_batchnorm(self.supernet, self.all_reduce)
        self.weight_optimizer = torch.optim.SGD(self.supernet.weight_parameters(), lr=settings.lr,
                                                momentum=settings.momentum, weight_decay=settings.weight_decay)
        self.arch_optimizer = torch.optim.Adam(self.supernet.arch_parameters(), lr=settings.arch_lr,
                                               betas=settings.arch_betas, weight_decay=settings.arch_weight_decay)
        self.rng = np.random.default_rng([settings.seed, 1])  # arch-half samples; same on every worker
        self._labels = dict(zip(np.concatenate([split.weight_ids, split.arch_ids]).tolist(),
                                np.concatenate([split.weight_labels, split.arch_labels]).tolist()))
        self.epoch = 0
        self.cycle_start = 0
        self.arch_images_processed = 0
        self.history: list[dict] = []

    # ------------------------------------------------------------ state

    @property
    def done(self) -> bool:
        return self.epoch >= self.settings.epochs

    def derive(self):
        """The discrete architecture the current alphas select."""
        return self.space.derive(self.supernet)

    def alphas(self) -> dict[str, list]:
        return {n: p.detach().cpu().tolist() for n, p in self.supernet.named_parameters() if n.startswith("alpha")}

    def lr_at(self, epoch: int) -> float:
        """Cosine annealing from lr to lr_min over the epochs left in the current cycle."""
        s = self.settings
        return cosine_lr(epoch, lr=s.lr, total_epochs=s.epochs, cycle_start=self.cycle_start, lr_min=s.lr_min)

    def state_dict(self) -> dict:
        """Everything to continue exactly here (rank 0's copy suffices: replicas are identical,
        except BatchNorm running statistics, which the search's train-mode passes never read)."""
        return {
            "settings": self.settings.to_dict(),
            "space": self.space.config.model_dump(mode="json"),
            "split": self.split.fingerprint(),
            "supernet": self.supernet.state_dict(),
            "weight_optimizer": self.weight_optimizer.state_dict(),
            "arch_optimizer": self.arch_optimizer.state_dict(),
            "selector": self.selector.state_dict(),
            "rng": copy.deepcopy(self.rng.bit_generator.state),
            "epoch": self.epoch,
            "cycle_start": self.cycle_start,
            "arch_images_processed": self.arch_images_processed,
            "history": copy.deepcopy(self.history),
        }

    def load_state_dict(self, state: dict) -> None:
        """Continue from ``state``; this search must be built with the same space, data and settings."""
        mine = self.settings.to_dict()
        for key, value in state["settings"].items():
            if mine.get(key) != value:
                raise ValueError(f"checkpoint was saved with DARTS setting {key}={value!r}, this search has "
                                 f"{key}={mine.get(key)!r}; resume with the saved settings")
        if state["space"] != self.space.config.model_dump(mode="json"):
            raise ValueError(f"checkpoint is for search space {state['space']}, not {self.space.config.model_dump(mode='json')}")
        if state["split"] != self.split.fingerprint():
            raise ValueError("checkpoint was saved for a different training split (bi-level split fingerprint differs)")
        self.supernet.load_state_dict(state["supernet"])
        self.weight_optimizer.load_state_dict(state["weight_optimizer"])
        self.arch_optimizer.load_state_dict(state["arch_optimizer"])
        self.selector.load_state_dict(state["selector"])
        self.rng.bit_generator.state = copy.deepcopy(state["rng"])
        self.epoch, self.cycle_start = int(state["epoch"]), int(state["cycle_start"])
        self.arch_images_processed = int(state["arch_images_processed"])
        self.history = copy.deepcopy(state["history"])

    # ------------------------------------------------------------ one epoch

    def _arch_sample(self, size: int) -> np.ndarray:
        """``size`` arch-half ids in random order (whole permutations first, so none repeats
        unless ``size`` exceeds the half)."""
        ids = self.split.arch_ids
        rounds = [self.rng.permutation(ids) for _ in range(-(-size // len(ids)))]
        return np.concatenate(rounds)[:size] if rounds else np.empty(0, dtype=np.int64)

    def _labels_of(self, ids: np.ndarray) -> np.ndarray:
        return np.array([self._labels[int(i)] for i in ids], dtype=np.int64)

    def _load(self, load: Loader, ids: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        images, labels = load(ids)
        labels = torch.as_tensor(labels, dtype=torch.long)
        if len(images) != len(ids) or not np.array_equal(labels.cpu().numpy(), self._labels_of(ids)):
            raise ValueError(f"the loader returned {len(images)} images / labels that do not match the "
                             f"{len(ids)} ids asked for (rows must follow the ids' order)")
        # canonical strides: with one channel, (N, 1, H, W) strides are ambiguous, and a tensor that
        # looks channels-last takes other conv kernels (other rounding) than the same values laid out
        # plainly; readers must not change the search's numbers
        return images.to(self.device).clone(memory_format=torch.contiguous_format), labels.to(self.device)

    def run_epoch(self, load: Loader) -> dict:
        """Plan, train (arch step then weight step per batch) and observe one epoch; returns its record."""
        started = time.perf_counter()
        settings, epoch = self.settings, self.epoch
        plan = self.selector.next_epoch()
        if plan.updated and settings.restart_lr_on_update:
            self.cycle_start = epoch + 1
        lr = self.lr_at(epoch)
        for group in self.weight_optimizer.param_groups:
            group["lr"] = lr
        train = {"images": 0.0, "loss_sum": 0.0, "correct": 0.0}
        arch = dict(train)
        if plan.train and len(plan.ids):
            train, arch = self._train(plan.ids, lr, load)
            self.arch_images_processed += int(arch["images"])
        record = {
            "epoch": epoch,
            "trained": bool(plan.train),
            "updated": bool(plan.updated),
            "replaced": int(plan.replaced),
            "lr": lr,
            "images": int(train["images"]),
            "train_loss": train["loss_sum"] / train["images"] if train["images"] else None,
            "train_accuracy": train["correct"] / train["images"] if train["images"] else None,
            "arch_loss": arch["loss_sum"] / arch["images"] if arch["images"] else None,
            "arch_accuracy": arch["correct"] / arch["images"] if arch["images"] else None,
            "images_processed": self.selector.images_processed,
            "arch_images_processed": self.arch_images_processed,
            "subset_updates": self.selector.subset_updates,
            "genotype": str(self.derive()),
            "alphas_digest": alphas_digest(self.supernet),
        }
        self.epoch += 1
        self._check_replicas(plan.ids)
        record["seconds"] = time.perf_counter() - started
        self.history.append(record)
        return record

    def _train(self, plan_ids: np.ndarray, lr: float, load: Loader) -> tuple[dict, dict]:
        s, n = self.settings, self.world_size
        plan_labels = self._labels_of(plan_ids)
        weight_parts = worker_batches(plan_ids, plan_labels, s.batch_size, n)[self.rank]
        arch_ids = self._arch_sample(len(plan_ids))
        arch_parts = worker_batches(arch_ids, self._labels_of(arch_ids), s.batch_size, n)[self.rank]
        mine = np.concatenate(weight_parts)
        xw, yw = self._load(load, mine)  # one read per epoch of this worker's shard
        xa, ya = self._load(load, np.concatenate(arch_parts))
        w_end, a_end = np.cumsum([len(p) for p in weight_parts]), np.cumsum([len(p) for p in arch_parts])
        totals = {"train": np.zeros(3), "arch": np.zeros(3)}
        confidence, correct = [], []
        self.supernet.train()
        for k in range(len(weight_parts)):
            tw = slice(w_end[k] - len(weight_parts[k]), w_end[k])
            ta = slice(a_end[k] - len(arch_parts[k]), a_end[k])
            arch = arch_step(self.supernet, self.arch_optimizer, self.weight_optimizer, (xw[tw], yw[tw]),
                             (xa[ta], ya[ta]), order=s.order, lr=lr, unroll_epsilon=s.unroll_epsilon,
                             all_reduce=self.all_reduce)
            train, conf, right = weight_step(self.supernet, self.weight_optimizer, (xw[tw], yw[tw]),
                                             grad_clip=s.grad_clip, all_reduce=self.all_reduce)
            totals["arch"] += [arch["images"], arch["loss_sum"], arch["correct"]]
            totals["train"] += [train["images"], train["loss_sum"], train["correct"]]
            confidence.append(conf)
            correct.append(right)
        # gather every worker's per-image results in plan order: my slots hold mine, the rest zero
        slot = {int(i): p for p, i in enumerate(plan_ids)}
        gathered = torch.zeros(2, len(plan_ids), dtype=torch.float64, device=self.device)
        positions = torch.as_tensor([slot[int(i)] for i in mine], dtype=torch.long, device=self.device)
        if len(mine):
            gathered[0, positions] = torch.cat(confidence).to(self.device, torch.float64)
            gathered[1, positions] = torch.cat(correct).to(self.device, torch.float64)
        self.all_reduce(gathered)
        gathered = gathered.cpu().numpy()
        self.selector.observe(plan_ids, np.clip(gathered[0], 0.0, 1.0), gathered[1] > 0.5)
        as_dict = lambda t: {"images": float(t[0]), "loss_sum": float(t[1]), "correct": float(t[2])}
        return as_dict(totals["train"]), as_dict(totals["arch"])

    def _check_replicas(self, plan_ids: np.ndarray) -> None:
        """Raise if any worker's parameters or plan differ from the others' (bit for bit).

        Each worker contributes (1, h, h^2) for a 24-bit hash h; sum(h)^2 == N * sum(h^2) exactly
        when all h are equal (Cauchy-Schwarz), and the sums are exact in float64."""
        if self.world_size == 1:
            return
        digest = hashlib.sha256()
        for p in self.supernet.parameters():
            digest.update(p.detach().cpu().contiguous().numpy().tobytes())
        digest.update(np.asarray(plan_ids, dtype=np.int64).tobytes())
        h = int(digest.hexdigest()[:6], 16)
        sums = torch.tensor([1.0, float(h), float(h * h)], dtype=torch.float64, device=self.device)
        self.all_reduce(sums)
        count, s1, s2 = (int(round(float(v))) for v in sums.cpu())
        if count != self.world_size or s1 * s1 != count * s2:
            raise ReplicaDriftError(
                f"rank {self.rank}: after epoch {self.epoch - 1} the {self.world_size} workers' supernets or plans "
                f"differ (workers counted: {count}); the alphas must be all-reduced and every worker must draw "
                "the same plan and arch sample")

    def run(self, load: Loader, *, until_epoch: int | None = None,
            progress: Callable[[dict], None] | None = None) -> list[dict]:
        """Run epochs until ``settings.epochs`` (or ``until_epoch``, to stop early and resume later)."""
        stop = self.settings.epochs if until_epoch is None else min(until_epoch, self.settings.epochs)
        records = []
        while self.epoch < stop:
            records.append(self.run_epoch(load))
            if progress:
                progress(records[-1])
        return records


def make_darts_search(space: CellSpace, train_ids, train_labels, *, num_classes: int, in_channels: int,
                      settings: DartsSettings, selection: Mapping[str, Any],
                      latents: tuple[np.ndarray, np.ndarray] | None = None, rank: int = 0, world_size: int = 1,
                      all_reduce: AllReduce | None = None, device: str | torch.device = "cpu") -> DartsSearch:
    """Split the training ids, build the selector over the weight half, and the search on top."""
    split = bilevel_split(train_ids, train_labels, arch_fraction=settings.arch_fraction, seed=settings.seed)
    selector = selector_for_weight_half(split, selection, seed=settings.seed, total_epochs=settings.epochs,
                                        latents=latents)
    return DartsSearch(space, num_classes, in_channels, split, selector, settings, rank=rank,
                       world_size=world_size, all_reduce=all_reduce, device=device)


def split_loader(split) -> Loader:
    """A :data:`Loader` over an in-memory :class:`~frugalnas.data.torch_dataset.ImageSplit`."""
    return lambda ids: split.batch(ids)


def summarize(search: DartsSearch, records: Iterable[dict] | None = None) -> dict:
    """The search's result: derived architecture, alphas, costs and per-epoch history."""
    history = list(search.history if records is None else records)
    return {
        "genotype": str(search.derive()),
        "alphas": search.alphas(),
        "alphas_digest": alphas_digest(search.supernet),
        "epochs": search.epoch,
        "images_processed": search.selector.images_processed,
        "arch_images_processed": search.arch_images_processed,
        "subset_updates": search.selector.subset_updates,
        "history": history,
        "selector_history": search.selector.history,
    }
