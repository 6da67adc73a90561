"""An autoencoder with a box-supervised spatial attention gate, for detection data sets.

A detection image is mostly background, and the plain autoencoder spends its latent on whatever
dominates the pixels. DDS-NAS's thesis adds an implicit attention layer so that the latent encodes
where the objects are and what they look like. Here the gate is explicit and supervised by the
ground-truth boxes (one of the designs in ``notes/detection.md``):

* the plain autoencoder's convolutions run until a feature map ``F`` on a ``gate_grid`` x
  ``gate_grid`` grid (a quarter of the input side, at most 16 x 16);
* a 3x3 convolution, a ReLU, a 1x1 convolution and a sigmoid give the gate ``a`` (one value per
  grid cell). The note's design had the 1x1 convolution alone; on BCCD its gate, seeing ~15 px of
  a 128 px image per cell, matched the boxes worse than an all-open gate (IoU 0.35-0.50 against
  0.45), and the 3x3 layer's context lifted it (0.58 on BCCD's val split at 128 px, the same 30
  epochs; see ``benchmarks/attention_embedding.py``);
* only ``F * a`` goes on through the rest of the encoder to the latent, so the latent sees the
  attended features and nothing else;
* the loss is reconstruction (MSE, the decoder is the plain one) plus ``attention_weight`` x the
  binary cross-entropy between ``a`` and the box mask on the same grid (the fraction of each cell
  covered by a box).

Everything but the gate and its loss is the plain autoencoder, so a comparison of the two measures
the gate. An image without boxes (a background image) teaches the gate to close everywhere.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from frugalnas.embed.autoencoder import AUTOENCODERS, FEATURE_SIZE, Autoencoder

MAX_GATE_GRID = 16
MASK_SUPERSAMPLE = 8  # box masks are painted this much finer than the gate grid, then averaged


def gate_grid(image_size: int) -> int:
    """The grid the gate works on: a quarter of the input side, between 4 and 16 cells."""
    return max(FEATURE_SIZE, min(MAX_GATE_GRID, image_size // 4))


def box_masks(boxes: list, grid: int) -> np.ndarray:
    """float32 (N, 1, grid, grid): the fraction of each cell covered by any of an image's boxes.

    ``boxes`` holds one list per image of YOLO-normalised boxes, each ``(cls, cx, cy, w, h)`` or a
    mapping with those keys (as stored in a dataset's ``boxes`` column); an empty list is an image
    without objects (an all-zero mask)."""
    fine = grid * MASK_SUPERSAMPLE
    masks = np.zeros((len(boxes), fine, fine), dtype=np.float32)
    for i, image_boxes in enumerate(boxes):
        for box in image_boxes or ():
            _, cx, cy, w, h = (box[k] for k in ("cls", "cx", "cy", "w", "h")) if isinstance(box, dict) else box
            x0, x1 = int(round((cx - w / 2) * fine)), int(round((cx + w / 2) * fine))
            y0, y1 = int(round((cy - h / 2) * fine)), int(round((cy + h / 2) * fine))
            # a box thinner than a fine cell still marks the cell it lies in
            x0, y0 = min(max(x0, 0), fine - 1), min(max(y0, 0), fine - 1)
            masks[i, y0:max(y1, y0 + 1), x0:max(x1, x0 + 1)] = 1.0
    coarse = masks.reshape(len(boxes), grid, MASK_SUPERSAMPLE, grid, MASK_SUPERSAMPLE).mean(axis=(2, 4))
    return coarse[:, None].astype(np.float32)


@AUTOENCODERS.register("attention")
class AttentionAutoencoder(Autoencoder):
    """The plain autoencoder with a spatial gate before the latent, trained to match the box masks."""

    options = ("attention_weight",)
    uses_masks = True

    def __init__(self, channels, image_size, latent_dim, *, attention_weight: float = 1.0, **kwargs):
        super().__init__(channels, image_size, latent_dim, **kwargs)
        if not attention_weight >= 0:
            raise ValueError(f"attention_weight must be >= 0, got {attention_weight!r}")
        self.attention_weight = float(attention_weight)
        self.gate_grid = gate_grid(self.image_size)
        before = int(math.log2(self.image_size // self.gate_grid))  # stride-2 stages before the gate
        layers = list(self.encoder)
        self.before_gate = nn.Sequential(*layers[:2 * before])  # each stage is (conv, relu)
        self.after_gate = nn.Sequential(*layers[2 * before:])
        gate_channels = self.before_gate[-2].out_channels
        self.gate = nn.Sequential(nn.Conv2d(gate_channels, gate_channels, kernel_size=3, padding=1),
                                  nn.ReLU(inplace=True), nn.Conv2d(gate_channels, 1, kernel_size=1))
        del self.encoder  # its layers live on in before_gate / after_gate

    def attention(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(features F, gate a in [0, 1] of shape (B, 1, G, G)) for a batch in [0, 1]."""
        features = self.before_gate(x)
        return features, torch.sigmoid(self.gate(features))

    def encode(self, x):
        features, gate = self.attention(x)
        return self.after_gate(features * gate)

    def objective(self, x, labels, masks=None):
        if masks is None:
            raise ValueError("the attention autoencoder is trained on box masks: pass masks (a detection data set)")
        features, gate = self.attention(x)
        z = self.after_gate(features * gate)
        recon_loss = F.mse_loss(self.decode(z), x)
        attention_loss = F.binary_cross_entropy(gate, masks)
        return {"loss": recon_loss + self.attention_weight * attention_loss, "recon_loss": recon_loss,
                "triplet_loss": z.new_zeros(()), "attention_loss": attention_loss}
