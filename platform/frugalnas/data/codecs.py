"""Image codecs for the Parquet store: every stored image is encoded bytes at a codec and quality.

Compressed storage is the normal case, so the codec is part of every dataset's identity and the card
records it. Each codec registers itself in :data:`CODECS` under the name used on the command line.
"""
from __future__ import annotations

import io
from abc import ABC, abstractmethod

import numpy as np
from PIL import Image

from frugalnas.errors import DataError
from frugalnas.registry import Registry

CODECS: Registry[type["Codec"]] = Registry("codec")


class Codec(ABC):
    """Turns an (H, W, C) uint8 array (C = 1 or 3) into bytes and back."""

    name: str = ""

    lossy: bool = True
    default_quality: int | None = 75
    quality_range: tuple[int, int] | None = (1, 100)

    def __init__(self, quality: int | None = None):
        if not self.lossy:
            quality = None  # quality has no meaning for a lossless codec; the card records null
        elif quality is None:
            quality = self.default_quality
        elif not (self.quality_range[0] <= quality <= self.quality_range[1]):
            lo, hi = self.quality_range
            raise DataError(f"quality {quality} is out of range for codec {self.name!r}: allowed {lo}..{hi}")
        self.quality = quality

    @abstractmethod
    def encode(self, pixels: np.ndarray) -> bytes: ...

    @abstractmethod
    def decode(self, data: bytes, height: int, width: int, channels: int) -> np.ndarray: ...


def _to_pil(pixels: np.ndarray) -> Image.Image:
    return Image.fromarray(pixels[:, :, 0] if pixels.shape[2] == 1 else pixels, mode="L" if pixels.shape[2] == 1 else "RGB")


def _from_pil(image: Image.Image, channels: int) -> np.ndarray:
    array = np.asarray(image.convert("L" if channels == 1 else "RGB"))
    return array[:, :, None] if channels == 1 else array


class _PillowCodec(Codec):
    pil_format: str = ""

    def save_options(self) -> dict:
        return {"quality": self.quality}

    def encode(self, pixels):
        buffer = io.BytesIO()
        _to_pil(pixels).save(buffer, format=self.pil_format, **self.save_options())
        return buffer.getvalue()

    def decode(self, data, height, width, channels):
        with Image.open(io.BytesIO(data)) as image:
            return _from_pil(image, channels)


@CODECS.register("jpeg")
class JpegCodec(_PillowCodec):
    """Baseline JPEG (the codec of the compression studies); quality 1..100."""

    name = "jpeg"
    pil_format = "JPEG"


@CODECS.register("webp")
class WebpCodec(_PillowCodec):
    """Lossy WebP; quality 1..100."""

    name = "webp"
    pil_format = "WEBP"

    def save_options(self):
        return {"quality": self.quality, "method": 4}


@CODECS.register("png")
class PngCodec(_PillowCodec):
    """Lossless PNG: the compressed-but-exact reference."""

    name = "png"
    pil_format = "PNG"
    lossy = False

    def save_options(self):
        return {"compress_level": 6}


@CODECS.register("raw")
class RawCodec(Codec):
    """The pixels themselves (row-major H, W, C uint8): the fastest to decode, the largest to store."""

    name = "raw"
    lossy = False

    def encode(self, pixels):
        return np.ascontiguousarray(pixels, dtype=np.uint8).tobytes()

    def decode(self, data, height, width, channels):
        expected = height * width * channels
        if len(data) != expected:
            raise DataError(f"raw image has {len(data)} bytes, expected {height}x{width}x{channels}={expected}")
        return np.frombuffer(data, dtype=np.uint8).reshape(height, width, channels)


def make_codec(name: str, quality: int | None = None) -> Codec:
    return CODECS.get(name)(quality)


def psnr(reference: np.ndarray, stored: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB of 8-bit images; identical images count as 100 dB."""
    mse = float(np.mean((reference.astype(np.float64) - stored.astype(np.float64)) ** 2))
    if mse == 0.0:
        return 100.0
    return min(100.0, 10.0 * np.log10(255.0**2 / mse))
