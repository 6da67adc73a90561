"""Video codecs applied to still images: H.264 (x264) and H.265 (x265) through PyAV's bundled FFmpeg.

Each image is one intra-coded frame from a **fresh encoder**: a single rate-controlled stream over a
data set would carry x264's rate control from one image to the next, so an image's quality would
depend on the images before it (36.0 vs 26.5 dB for the same image at CRF 23, measured). A fresh,
single-threaded encoder per image makes the bytes a function of the pixels and the CRF alone.

``quality`` is the constant rate factor: 0..51, lower is better (x264's default is 23, x265's 28).
x264 at CRF 0 is exact for grey images; colour images still lose to the RGB -> YCbCr conversion and
4:2:0 chroma subsampling (about 41 dB on CIFAR-size images at CRF 0).

Colour images are coded as yuv420p, grey images as gray (4:0:0, the luma plane itself, so no colour
conversion touches them). yuv420p needs an even width and height, so odd-sized images are padded
by repeating their last row or column before encoding and cropped back after decoding (x265 also
pads images smaller than 16x16). The stored bytes are an Annex B stream of the parameter sets and
the slice data; x264's and x265's informational SEI messages (about 600 bytes of encoder settings
as text, not needed to decode) are dropped. Payload = the slice (VCL) NAL units.
"""
from __future__ import annotations

import functools
from fractions import Fraction

import numpy as np

from frugalnas.data.codecs import CODECS, Codec
from frugalnas.errors import DataError


def nal_units(data: bytes) -> list[tuple[int, int]]:
    """(start, end) of every NAL unit (without its start code) in an Annex B byte stream."""
    starts, position, size = [], 0, len(data)
    while True:
        found = data.find(b"\x00\x00\x01", position)
        if found < 0:
            break
        starts.append((found - 1 if found > 0 and data[found - 1] == 0 else found, found + 3))
        position = found + 3
    return [(body, starts[i + 1][0] if i + 1 < len(starts) else size) for i, (_, body) in enumerate(starts)]


class _VideoCodec(Codec):
    encoder: str = ""
    decoder: str = ""
    default_quality = 23
    quality_range = (0, 51)
    scale = "CRF"
    lower_is_better = True
    preset = "medium"
    min_size = 2  # smallest width/height the encoder takes; smaller images are padded up to it

    # ---------------------------------------------------------------- NAL unit types

    @staticmethod
    def nal_type(first_byte: int) -> int:
        raise NotImplementedError

    vcl_types: frozenset = frozenset()
    sei_types: frozenset = frozenset()

    # ---------------------------------------------------------------- coding

    def encoder_options(self) -> dict[str, str]:
        raise NotImplementedError

    def pixel_format(self, channels):
        return "gray" if channels == 1 else "yuv420p"

    def encode(self, pixels):
        import av

        height, width, channels = pixels.shape
        pad_height, pad_width = max(self.min_size, height + height % 2), max(self.min_size, width + width % 2)
        padded = np.pad(pixels, ((0, pad_height - height), (0, pad_width - width), (0, 0)), mode="edge")
        context = av.CodecContext.create(self.encoder, "w")
        context.width, context.height = padded.shape[1], padded.shape[0]
        context.pix_fmt = self.pixel_format(channels)
        context.time_base = Fraction(1, 25)
        context.options = self.encoder_options()
        if channels == 1:
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(padded[:, :, 0]), format="gray")
        else:
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(padded), format="rgb24").reformat(
                format=context.pix_fmt)
        try:
            packets = list(context.encode(frame)) + list(context.encode(None))
        except av.FFmpegError as error:
            raise DataError(f"{self.name} encoder ({self.encoder}) failed on a {width}x{height} image: {error}") from None
        return self._without_sei(b"".join(bytes(packet) for packet in packets))

    def decode(self, data, height, width, channels):
        import av

        context = av.CodecContext.create(self.decoder, "r")
        try:
            frames = list(context.decode(av.Packet(data))) + list(context.decode(None))
        except av.FFmpegError as error:
            raise DataError(f"corrupt {self.name} image ({len(data)} bytes): {error}") from None
        if len(frames) != 1:
            raise DataError(f"corrupt {self.name} image ({len(data)} bytes): decoded {len(frames)} frames, expected 1")
        if channels == 1:
            # the luma plane as coded: a colour conversion would map it as limited-range video
            plane = frames[0].planes[0]
            luma = np.frombuffer(bytes(plane), np.uint8).reshape(plane.height, plane.line_size)
            return np.ascontiguousarray(luma[:height, :width, None])
        return np.ascontiguousarray(frames[0].to_ndarray(format="rgb24")[:height, :width])

    def _without_sei(self, data: bytes) -> bytes:
        kept = [data[start:end] for start, end in nal_units(data) if self.nal_type(data[start]) not in self.sei_types]
        return b"".join(b"\x00\x00\x00\x01" + unit for unit in kept)

    def payload_bytes(self, data):
        return sum(end - start for start, end in nal_units(data) if self.nal_type(data[start]) in self.vcl_types)

    # ---------------------------------------------------------------- versions

    @classmethod
    def library_versions(cls):
        import av

        return {"pyav": av.__version__, "libavcodec": ".".join(map(str, av.library_versions["libavcodec"])),
                cls.encoder: cls._encoder_build()}

    @classmethod
    @functools.cache
    def _encoder_build(cls) -> str:
        """The encoder's own version string, read from the SEI message it writes into every stream
        (e.g. 'x264 - core 164 r3108 31e19f9'): PyAV does not expose it otherwise."""
        import av

        codec = cls(cls.default_quality)
        context = av.CodecContext.create(cls.encoder, "w")
        context.width = context.height = 16
        context.pix_fmt, context.time_base, context.options = "yuv420p", Fraction(1, 25), codec.encoder_options()
        frame = av.VideoFrame.from_ndarray(np.zeros((16, 16, 3), np.uint8), format="rgb24").reformat(format="yuv420p")
        stream = b"".join(bytes(p) for p in list(context.encode(frame)) + list(context.encode(None)))
        for start, end in nal_units(stream):
            if cls.nal_type(stream[start]) in cls.sei_types:
                text = stream[start:end].decode("latin-1")
                for marker in ("x264 - ", "x265 ("):
                    if marker in text:
                        words = text[text.index(marker):].split(" - ")[:2]
                        return "".join(c for c in " - ".join(words) if c.isprintable())
        return "unknown"


@CODECS.register("h264")
class H264Codec(_VideoCodec):
    """H.264/AVC intra frames by x264 (``preset medium``, ``tune zerolatency``, one thread); quality =
    CRF 0..51, lower is better, default 23. Payload: the slice NAL units (SPS/PPS excluded)."""

    name = "h264"
    encoder, decoder = "libx264", "h264"
    vcl_types = frozenset(range(1, 6))
    sei_types = frozenset({6})

    @staticmethod
    def nal_type(first_byte):
        return first_byte & 0x1F

    def encoder_options(self):
        return {"crf": str(self.quality), "preset": self.preset, "tune": "zerolatency", "threads": "1"}


@CODECS.register("h265")
class H265Codec(_VideoCodec):
    """H.265/HEVC intra frames by x265 (``preset medium``, no thread pool); quality = CRF 0..51,
    lower is better, default 28 (x265's). About 10x slower per image than h264 (encoder start-up).
    Payload: the VCL NAL units (VPS/SPS/PPS excluded)."""

    name = "h265"
    encoder, decoder = "libx265", "hevc"
    default_quality = 28
    min_size = 16  # x265 refuses pictures smaller than its minimum coding block
    vcl_types = frozenset(range(0, 32))
    sei_types = frozenset({39, 40})

    @staticmethod
    def nal_type(first_byte):
        return (first_byte >> 1) & 0x3F

    def encoder_options(self):
        return {"crf": str(self.quality), "preset": self.preset, "tune": "zerolatency",
                "x265-params": "pools=none:frame-threads=1:log-level=error"}
