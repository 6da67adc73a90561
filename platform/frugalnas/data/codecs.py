"""Image codecs for the Parquet store: every stored image is encoded bytes at a codec and quality.

Compressed storage is the normal case, so the codec is part of every dataset's identity and the card
records it. Each codec registers itself in :data:`CODECS` under the name used on the command line.

``quality`` is on each codec's own scale: 0..100 (higher is better) for JPEG, WebP and AVIF, the
constant rate factor 0..51 (lower is better) for the video codecs (:mod:`frugalnas.data.video_codecs`).
Quality numbers do not correspond across codecs; compare codecs on bits per pixel and PSNR. For
that, every codec says how many of its bytes are *payload* (entropy-coded image data) as opposed to
container and header bytes, which dominate tiny images (JPEG's tables, H.264's parameter sets).
"""
from __future__ import annotations

import io
import struct
from abc import ABC, abstractmethod

import numpy as np
from PIL import Image

from frugalnas.errors import DataError
from frugalnas.registry import Registry

CODECS: Registry[type["Codec"]] = Registry("codec")


class Codec(ABC):
    """Turns an (H, W, C) uint8 array (C = 1 or 3) into bytes and back.

    Every call encodes one image on its own (no state carried between images), so an image's
    bytes depend only on its pixels, the codec and the quality."""

    name: str = ""

    lossy: bool = True
    default_quality: int | None = 75
    quality_range: tuple[int, int] | None = (1, 100)
    #: what ``quality`` means for this codec, for messages and plots
    scale: str = "quality"
    #: True when a larger quality number means *more* loss (CRF)
    lower_is_better: bool = False

    def __init__(self, quality: int | None = None):
        if not self.lossy:
            quality = None  # quality has no meaning for a lossless codec; the card records null
        elif quality is None:
            quality = self.default_quality
        elif not (self.quality_range[0] <= quality <= self.quality_range[1]):
            raise DataError(f"quality {quality} is out of range for codec {self.name!r}: "
                            f"{self.describe_scale()}")
        self.quality = quality

    @classmethod
    def describe_scale(cls) -> str:
        """The allowed qualities in words, e.g. 'CRF 0..51 (lower is better)'."""
        if not cls.lossy:
            return "lossless (no quality setting)"
        lo, hi = cls.quality_range
        better = "lower" if cls.lower_is_better else "higher"
        return f"allowed {cls.scale} {lo}..{hi} ({better} is better, default {cls.default_quality})"

    @abstractmethod
    def encode(self, pixels: np.ndarray) -> bytes: ...

    @abstractmethod
    def decode(self, data: bytes, height: int, width: int, channels: int) -> np.ndarray: ...

    def payload_bytes(self, data: bytes) -> int:
        """Bytes of entropy-coded image data in ``data``, headers and container excluded."""
        return len(data)

    def pixel_format(self, channels: int) -> str:
        """The pixel layout the codec actually codes (chroma subsampling matters for quality)."""
        return "gray" if channels == 1 else "rgb24"

    @classmethod
    def library_versions(cls) -> dict[str, str]:
        """Versions of the libraries doing the coding: outputs can change across builds."""
        from PIL import __version__

        return {"pillow": __version__}


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
    """Baseline JPEG (the codec of the compression studies, libjpeg-turbo through Pillow); quality
    1..100. Payload: the entropy-coded scan data (quantisation and Huffman tables excluded)."""

    name = "jpeg"
    pil_format = "JPEG"

    def payload_bytes(self, data):
        return jpeg_scan_bytes(data)

    def pixel_format(self, channels):
        return "gray" if channels == 1 else "yuvj420p"  # Pillow's default: full-range YCbCr, 4:2:0 at every quality

    @classmethod
    def library_versions(cls):
        from PIL import features

        return {**super().library_versions(), "libjpeg-turbo": features.version_feature("libjpeg_turbo") or "none",
                "libjpeg": features.version("jpg")}


@CODECS.register("webp")
class WebpCodec(_PillowCodec):
    """Lossy WebP (libwebp through Pillow); quality 0..100. Payload: the VP8/VP8L bitstream chunks."""

    name = "webp"
    pil_format = "WEBP"
    quality_range = (0, 100)

    def save_options(self):
        return {"quality": self.quality, "method": 4}

    def payload_bytes(self, data):
        return riff_chunk_bytes(data, (b"VP8 ", b"VP8L"))

    def pixel_format(self, channels):
        return "yuv420p"  # lossy WebP is always 4:2:0; grey images are coded as colour

    @classmethod
    def library_versions(cls):
        from PIL import features

        return {**super().library_versions(), "libwebp": features.version("webp")}


@CODECS.register("avif")
class AvifCodec(_PillowCodec):
    """AVIF (AV1 intra frames; libavif with libaom through Pillow); quality 0..100. Single-threaded
    so that the bytes are reproducible. Payload: the ``mdat`` box (the AV1 data), so the HEIF
    container's boxes are excluded."""

    name = "avif"
    pil_format = "AVIF"
    quality_range = (0, 100)

    def save_options(self):
        return {"quality": self.quality, "speed": 6, "max_threads": 1}

    def payload_bytes(self, data):
        return isobmff_box_bytes(data, b"mdat")

    def pixel_format(self, channels):
        return "gray" if channels == 1 else "yuv420p"

    @classmethod
    def library_versions(cls):
        from PIL import AvifImagePlugin, features

        return {**super().library_versions(), "libavif": features.version("avif") or "none",
                "aom": AvifImagePlugin.get_codec_version("aom") or "none",
                "dav1d": AvifImagePlugin.get_codec_version("dav1d") or "none"}


@CODECS.register("png")
class PngCodec(_PillowCodec):
    """Lossless PNG: the compressed-but-exact reference. Payload: the IDAT chunks."""

    name = "png"
    pil_format = "PNG"
    lossy = False

    def save_options(self):
        return {"compress_level": 6}

    def payload_bytes(self, data):
        return png_idat_bytes(data)

    @classmethod
    def library_versions(cls):
        from PIL import features

        return {**super().library_versions(), "zlib": features.version("zlib")}


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

    @classmethod
    def library_versions(cls):
        return {"numpy": np.__version__}


# ---------------------------------------------------------------- payload: bytes that are image data


def jpeg_scan_bytes(data: bytes) -> int:
    """Entropy-coded bytes of a JPEG: the data after each start-of-scan header up to the next marker
    (restart markers are part of the scan). Everything else (tables, headers) is excluded."""
    position, total, size = 2, 0, len(data)
    while position + 4 <= size:
        if data[position] != 0xFF:
            raise ValueError(f"corrupt JPEG: no marker at byte {position}")
        marker = data[position + 1]
        if marker == 0xFF:  # fill byte
            position += 1
            continue
        if marker == 0xD9:  # end of image
            break
        length = struct.unpack(">H", data[position + 2 : position + 4])[0]
        position += 2 + length
        if marker != 0xDA:  # not a start of scan: a table or header segment
            continue
        scan_start = position
        while position + 1 < size and not (data[position] == 0xFF and data[position + 1] not in SCAN_BYTES_AFTER_FF):
            position += 1
        total += position - scan_start
    return total


SCAN_BYTES_AFTER_FF = {0x00, *range(0xD0, 0xD8)}  # stuffed zero, restart markers RST0..RST7


def png_idat_bytes(data: bytes) -> int:
    """Bytes of a PNG's IDAT chunk data (the deflated pixels)."""
    position, total = 8, 0
    while position + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[position : position + 8])
        if kind == b"IDAT":
            total += length
        position += 12 + length
    return total


def riff_chunk_bytes(data: bytes, kinds: tuple[bytes, ...]) -> int:
    """Bytes of the named chunks' data in a RIFF file (WebP: ``VP8 `` / ``VP8L``)."""
    position, total = 12, 0
    while position + 8 <= len(data):
        kind, length = data[position : position + 4], struct.unpack("<I", data[position + 4 : position + 8])[0]
        if kind in kinds:
            total += length
        position += 8 + length + (length & 1)
    return total


def isobmff_box_bytes(data: bytes, kind: bytes) -> int:
    """Bytes of the named top-level boxes' contents in an ISO base media file (AVIF: ``mdat``)."""
    position, total = 0, 0
    while position + 8 <= len(data):
        size, box = struct.unpack(">I4s", data[position : position + 8])
        header = 8
        if size == 1:
            size, header = struct.unpack(">Q", data[position + 8 : position + 16])[0], 16
        elif size == 0:
            size = len(data) - position
        if box == kind:
            total += size - header
        position += max(size, header)
    return total


def make_codec(name: str, quality: int | None = None) -> Codec:
    return CODECS.get(name)(quality)


def codec_versions(name: str) -> dict[str, str]:
    """The library versions behind codec ``name`` (for the dataset card)."""
    return CODECS.get(name).library_versions()


def psnr(reference: np.ndarray, stored: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB of 8-bit images; identical images count as 100 dB."""
    mse = float(np.mean((reference.astype(np.float64) - stored.astype(np.float64)) ** 2))
    if mse == 0.0:
        return 100.0
    return min(100.0, 10.0 * np.log10(255.0**2 / mse))


def ssim(reference: np.ndarray, stored: np.ndarray) -> float:
    """Structural similarity (Wang et al. 2004: Gaussian window sigma 1.5, K1 0.01, K2 0.03) of 8-bit
    (H, W, C) images, averaged over pixels and channels; 1.0 for identical images."""
    from scipy.ndimage import gaussian_filter1d

    x, y = reference.astype(np.float32), stored.astype(np.float32)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    # the five local means in one separable pass (per channel, never across channels)
    stack = np.stack([x, y, x * x, y * y, x * y])
    blurred = gaussian_filter1d(gaussian_filter1d(stack, 1.5, axis=1, truncate=3.5), 1.5, axis=2, truncate=3.5)
    mx, my, xx, yy, xy = blurred
    vx, vy, cov = xx - mx * mx, yy - my * my, xy - mx * my
    index = ((2 * mx * my + c1) * (2 * cov + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return float(index.mean())
