"""Convolutional autoencoders whose latents place similar images close together.

DDS-NAS swaps an easy image for the same-class image furthest from it in an autoencoder's latent
space, so the latent must make *similar images similar vectors*. Every kind shares one conv
encoder/decoder sized from the input; kinds differ in the training objective. Each registers
itself in :data:`AUTOENCODERS` under the name used in configs (``plain``, ``triplet``, and
``attention`` for detection data in :mod:`frugalnas.embed.attention`).
"""
from __future__ import annotations

import math
from numbers import Integral

import torch
import torch.nn.functional as F
from torch import nn

from frugalnas.registry import Registry

AUTOENCODERS: Registry[type["Autoencoder"]] = Registry("autoencoder")

CHANNELS = (1, 3)
MIN_IMAGE_SIZE = 8
FEATURE_SIZE = 4  # the encoder halves the image until it is 4x4, whatever the input size


class Autoencoder(nn.Module):
    """Conv encoder (C, S, S) -> ``latent_dim`` vector and a mirrored decoder back to (C, S, S).

    The encoder is log2(S) - 2 stride-2 3x3 convolutions (so 8x8 digits get one, 32x32 images
    three, 64x64 four) that end on a 4x4 map, then a linear layer to the latent. Channel width
    starts at ``width`` and doubles per stage up to ``max_width``. The decoder mirrors it with
    transposed convolutions and ends in a sigmoid, since inputs are scaled to [0, 1].

    Subclasses define :meth:`objective`. ``options`` names the training options (beyond the
    shape) that a kind's constructor accepts, so the training loop passes only those;
    ``uses_masks`` says the kind trains on box masks (detection data) and has a ``gate_grid``.
    """

    options: tuple[str, ...] = ()
    uses_masks: bool = False
    #: Version of the kind's training recipe; part of a cached embedding's key, so a changed recipe
    #: never serves embeddings made by the old one.
    recipe: int = 1

    def __init__(self, channels: int, image_size: int, latent_dim: int, *, width: int = 16,
                 max_width: int = 128):
        super().__init__()
        check_shape(channels, image_size, latent_dim)
        channels, image_size, latent_dim = int(channels), int(image_size), int(latent_dim)
        self.channels, self.image_size, self.latent_dim = channels, image_size, latent_dim
        stages = int(math.log2(image_size)) - int(math.log2(FEATURE_SIZE))
        widths = [min(width * 2**i, max_width) for i in range(stages)]

        down, c_in = [], channels
        for c_out in widths:
            down += [nn.Conv2d(c_in, c_out, 3, stride=2, padding=1), nn.ReLU(inplace=True)]
            c_in = c_out
        self.encoder = nn.Sequential(*down, nn.Flatten(),
                                     nn.Linear(c_in * FEATURE_SIZE**2, latent_dim))

        up = []
        for c_out in reversed(widths[:-1]):
            up += [nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1), nn.ReLU(inplace=True)]
            c_in = c_out
        self.decoder = nn.Sequential(
            nn.Linear(latent_dim, widths[-1] * FEATURE_SIZE**2), nn.ReLU(inplace=True),
            nn.Unflatten(1, (widths[-1], FEATURE_SIZE, FEATURE_SIZE)),
            *up,
            nn.ConvTranspose2d(c_in, c_in, 4, stride=2, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(c_in, channels, 3, padding=1), nn.Sigmoid(),
        )

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, S, S) in [0, 1] -> (B, latent_dim)."""
        return self.encoder(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """(B, latent_dim) -> (B, C, S, S) in [0, 1]."""
        return self.decoder(z)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.encode(x)
        return self.decode(z), z

    def objective(self, x: torch.Tensor, labels: torch.Tensor,
                  masks: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Loss terms for one batch: ``loss`` (what is minimised), ``recon_loss``,
        ``triplet_loss`` (zero for kinds without a metric term), and kind-specific ones.
        ``masks`` (B, 1, G, G) are box masks, given to kinds with ``uses_masks``."""
        raise NotImplementedError


@AUTOENCODERS.register("plain")
class PlainAutoencoder(Autoencoder):
    """Reconstruction (MSE) only: similarity is whatever pixels-through-a-bottleneck gives."""

    def objective(self, x, labels, masks=None):
        recon, z = self(x)
        recon_loss = F.mse_loss(recon, x)
        return {"loss": recon_loss, "recon_loss": recon_loss, "triplet_loss": z.new_zeros(())}


@AUTOENCODERS.register("triplet")
class TripletAutoencoder(Autoencoder):
    """Reconstruction + class-aware triplet-margin loss on the latents (the DDS-NAS CIFAR AE).

    Recipe 2 (the default): the triplet term compares the *L2-normalised* latents (distances in
    [0, 2], margin 0.2) and averages over every valid triplet of the batch that still violates the
    margin (batch-all mining, Hermans et al. 2017). Recipe 1, batch-hard mining (each anchor with its
    furthest positive and nearest negative) on the raw latents with margin 1, collapsed on CIFAR-10:
    every image went to one point (latent std 7e-6), where the triplet loss sits at the margin with
    zero gradient and the reconstruction term alone cannot pull the encoder out; its neighbours
    agreed on labels less often than raw pixels' (benchmarks/RESULTS.md). Normalising removes the
    scale the collapse shrinks, and batch-all mining gives every violating triplet a gradient instead
    of only the hardest, which early in training are mostly noise. The reconstruction term keeps the
    latent describing the image, not only its class, which the furthest-neighbour swap relies on.
    """

    options = ("margin",)
    recipe = 2

    def __init__(self, channels, image_size, latent_dim, *, margin: float = 0.2, **kwargs):
        super().__init__(channels, image_size, latent_dim, **kwargs)
        if not margin > 0:
            raise ValueError(f"triplet margin must be > 0, got {margin!r}")
        self.margin = float(margin)

    def objective(self, x, labels, masks=None):
        recon, z = self(x)
        recon_loss = F.mse_loss(recon, x)
        triplet_loss = batch_all_triplet_loss(F.normalize(z, dim=1), labels, self.margin)
        return {"loss": recon_loss + triplet_loss, "recon_loss": recon_loss,
                "triplet_loss": triplet_loss}


def batch_all_triplet_loss(z: torch.Tensor, labels: torch.Tensor, margin: float) -> torch.Tensor:
    """Mean of relu(d(a, p) - d(a, n) + margin) over the batch's valid triplets (a, p same class,
    a != p; n another class) whose loss is positive: the ones that still teach something.

    A batch without any such triplet contributes zero (still attached to the graph). Memory grows
    as the cube of the batch size (2M triplets at 128).
    """
    d = (z[:, None, :] - z[None, :, :]).pow(2).sum(-1).clamp_min(1e-12).sqrt()
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(len(z), dtype=torch.bool, device=z.device)
    valid = (same & ~eye)[:, :, None] & ~same[:, None, :]  # [anchor, positive, negative]
    losses = F.relu(d[:, :, None] - d[:, None, :] + margin)[valid]
    active = losses > 1e-16
    if not active.any():
        return z.sum() * 0.0
    return losses[active].mean()


def batch_hard_triplet_loss(z: torch.Tensor, labels: torch.Tensor, margin: float) -> torch.Tensor:
    """Mean over anchors of relu(d(anchor, hardest positive) - d(anchor, hardest negative) + margin).

    Anchors whose class has no other member, or no other class, in the batch are skipped; a batch
    without any valid anchor contributes zero (still attached to the graph).
    """
    # Euclidean distances with a floor under the square root: its gradient at 0 is infinite.
    d = (z[:, None, :] - z[None, :, :]).pow(2).sum(-1).clamp_min(1e-12).sqrt()
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(len(z), dtype=torch.bool, device=z.device)
    pos, neg = same & ~eye, ~same
    valid = pos.any(1) & neg.any(1)
    if not valid.any():
        return z.sum() * 0.0
    hardest_pos = d.masked_fill(~pos, float("-inf")).amax(1)
    hardest_neg = d.masked_fill(~neg, float("inf")).amin(1)
    return F.relu(hardest_pos - hardest_neg + margin)[valid].mean()


def check_shape(channels: int, image_size: int, latent_dim: int) -> None:
    """Raise a clear error for shapes the conv stack cannot take."""
    if channels not in CHANNELS:
        raise ValueError(f"images must have 1 or 3 channels, got {channels}")
    if (not _is_int(image_size) or image_size < MIN_IMAGE_SIZE
            or image_size & (image_size - 1)):
        raise ValueError(f"image_size must be a power of two >= {MIN_IMAGE_SIZE}, got {image_size!r}")
    if not _is_int(latent_dim) or latent_dim < 1:
        raise ValueError(f"latent_dim must be a positive integer, got {latent_dim!r}")


def _is_int(x) -> bool:
    return isinstance(x, Integral) and not isinstance(x, bool)
