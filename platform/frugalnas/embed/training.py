"""Training an autoencoder on an image array, and encoding images with it.

Plain PyTorch on the CPU (no Ray, no MLflow): the caller decides where it runs and how progress
is recorded, through the ``progress`` callback.
"""
from __future__ import annotations

import time
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from frugalnas.embed.autoencoder import AUTOENCODERS, Autoencoder, check_shape

RESIZE_CHUNK = 1024  # images resized at a time, so a large set never needs a float copy


def prepare_images(images: np.ndarray, image_size: int) -> torch.Tensor:
    """uint8 (N, H, W, C) -> uint8 tensor (N, C, S, S), resized bilinearly to S = image_size.

    The result stays uint8 (a quarter of float32's memory); batches are scaled to [0, 1] when
    used (:func:`to_unit`). Grayscale (N, H, W) is taken as C = 1.
    """
    images = np.asarray(images)
    if images.dtype != np.uint8:
        raise ValueError(f"images must be uint8, got dtype {images.dtype}")
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4:
        raise ValueError(f"images must have shape (N, H, W, C), got {images.shape}")
    if len(images) == 0:
        raise ValueError("images is empty")
    check_shape(images.shape[3], image_size, 1)
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2)
    if x.shape[2:] == (image_size, image_size):
        return x.contiguous()
    out = torch.empty((len(x), x.shape[1], image_size, image_size), dtype=torch.uint8)
    for i in range(0, len(x), RESIZE_CHUNK):
        chunk = x[i:i + RESIZE_CHUNK].float()
        # antialias matters when shrinking (e.g. 64 -> 32); it is a no-op when enlarging
        chunk = F.interpolate(chunk, size=(image_size, image_size), mode="bilinear",
                              align_corners=False, antialias=True)
        out[i:i + RESIZE_CHUNK] = chunk.round_().clamp_(0, 255).to(torch.uint8)
    return out


def to_unit(x: torch.Tensor) -> torch.Tensor:
    """uint8 batch -> float32 in [0, 1]."""
    return x.float().div_(255.0)


def train_autoencoder(
    images: np.ndarray,
    labels: np.ndarray,
    *,
    kind: str = "triplet",
    latent_dim: int = 16,
    epochs: int = 10,
    image_size: int = 32,
    batch_size: int = 128,
    lr: float = 1e-3,
    margin: float = 0.2,
    attention_weight: float = 1.0,
    boxes: list | None = None,
    seed: int = 0,
    progress: Callable[[dict], None] | None = None,
) -> tuple[Autoencoder, list[dict]]:
    """Train an autoencoder of ``kind`` (a name in :data:`AUTOENCODERS`) on ``images``.

    ``images`` is uint8 (N, H, W, C), C = 1 or 3; ``labels`` (N,) ints (used by metric kinds
    such as ``triplet``); ``boxes`` one list of YOLO-normalised boxes per image, which kinds that
    train on box masks (``attention``) need. Images are resized to ``image_size`` and scaled to [0, 1]. Adam at
    ``lr``; ``epochs=0`` returns the randomly initialised model (the untrained-AE control).
    Deterministic for a ``seed`` on the CPU: it seeds the initialisation and the shuffling.

    Returns ``(model, history)``: the model in eval mode and one dict per epoch,
    ``{epoch, epochs, loss, recon_loss, triplet_loss, [attention_loss,] seconds}`` (means over the epoch's images),
    each also passed to ``progress`` as soon as the epoch ends.
    """
    cls = AUTOENCODERS.get(kind)
    x = prepare_images(images, image_size)
    labels = np.asarray(labels)
    if labels.shape != (len(x),):
        raise ValueError(f"labels must have shape ({len(x)},) to match images, got {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be integers, got dtype {labels.dtype}")
    if "margin" in cls.options and len(np.unique(labels)) < 2:
        raise ValueError(f"autoencoder {kind!r} needs at least 2 classes in labels")
    if not isinstance(epochs, int) or epochs < 0:
        raise ValueError(f"epochs must be an integer >= 0, got {epochs!r}")
    if not isinstance(batch_size, int) or batch_size < 2:
        raise ValueError(f"batch_size must be an integer >= 2, got {batch_size!r}")
    if cls.uses_masks and (boxes is None or len(boxes) != len(x)):
        raise ValueError(f"autoencoder {kind!r} trains on box masks: it needs boxes for every image "
                         f"(a detection data set), got {'none' if boxes is None else len(boxes)} for {len(x)} images")
    y = torch.from_numpy(labels.astype(np.int64))

    given = {"margin": margin, "attention_weight": attention_weight}
    with torch.random.fork_rng(devices=[]):  # seed the initialisation without touching the caller's RNG
        torch.manual_seed(seed)
        model = cls(x.shape[1], image_size, latent_dim, **{k: given[k] for k in cls.options})
    masks = None
    if cls.uses_masks:
        from frugalnas.embed.attention import box_masks

        masks = torch.from_numpy(box_masks(boxes, model.gate_grid))
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    shuffle = torch.Generator().manual_seed(seed)

    history: list[dict] = []
    for epoch in range(1, epochs + 1):
        start = time.perf_counter()
        model.train()
        totals: dict[str, float] = {}
        for idx in torch.randperm(len(x), generator=shuffle).split(batch_size):
            terms = model.objective(to_unit(x[idx]), y[idx], None if masks is None else masks[idx])
            optimizer.zero_grad(set_to_none=True)
            terms["loss"].backward()
            optimizer.step()
            for name, value in terms.items():
                totals[name] = totals.get(name, 0.0) + value.item() * len(idx)
        record = {"epoch": epoch, "epochs": epochs,
                  **{name: total / len(x) for name, total in totals.items()},
                  "seconds": time.perf_counter() - start}
        history.append(record)
        if progress is not None:
            progress(record)
    model.eval()
    return model, history


@torch.no_grad()
def encode(model: Autoencoder, images: np.ndarray, image_size: int | None = None,
           batch_size: int = 512) -> np.ndarray:
    """Latents of ``images`` (uint8 (N, H, W, C)) as float32 (N, latent_dim).

    ``image_size`` defaults to the size the model was built for; any other value is an error.
    """
    if image_size is None:
        image_size = model.image_size
    if image_size != model.image_size:
        raise ValueError(f"model was built for image_size {model.image_size}, got {image_size}")
    x = prepare_images(images, image_size)
    if x.shape[1] != model.channels:
        raise ValueError(f"model takes {model.channels}-channel images, got {x.shape[1]}")
    was_training = model.training
    model.eval()
    out = torch.cat([model.encode(to_unit(b)) for b in x.split(batch_size)])
    model.train(was_training)
    return out.numpy().astype(np.float32, copy=False)
