"""Compression levels: a codec at a quality on that codec's own scale."""
from __future__ import annotations

from dataclasses import dataclass

from frugalnas.data.codecs import CODECS

#: Where the published studies saw accuracy fall sharply (Poyser et al., ICPR 2020): JPEG below
#: quality 15, H.264 from CRF 40. Marked on the plots against each codec's own scale.
PUBLISHED_KNEES = {"jpeg": 15, "h264": 40}

#: CIFAR-10-C's JPEG corruption (Hendrycks & Dietterich 2019), quality per severity 1..5.
CIFAR10C_JPEG_QUALITIES = (80, 65, 58, 50, 40)


@dataclass(frozen=True, order=True)
class Level:
    codec: str
    quality: int

    @property
    def scale(self) -> str:
        return CODECS.get(self.codec).scale

    @property
    def lower_is_better(self) -> bool:
        return CODECS.get(self.codec).lower_is_better

    @property
    def name(self) -> str:
        """Folder- and metric-safe name: ``jpeg-q10``, ``h264-crf40``."""
        return f"{self.codec}-{'crf' if self.scale == 'CRF' else 'q'}{self.quality}"

    @property
    def label(self) -> str:
        """Short label for plots: ``q10``, ``CRF 40``."""
        return f"CRF {self.quality}" if self.scale == "CRF" else f"q{self.quality}"

    def fidelity_order(self) -> int:
        """Sorts a codec's levels from least to most compressed."""
        return self.quality if self.lower_is_better else -self.quality


def ordered(levels) -> list[Level]:
    """Levels grouped by codec (in first-seen order), least compressed first within a codec."""
    levels = list(levels)
    codecs = list(dict.fromkeys(level.codec for level in levels))
    return sorted(set(levels), key=lambda level: (codecs.index(level.codec), level.fidelity_order()))


def from_mapping(mapping: dict[str, list[int]]) -> list[Level]:
    return ordered(Level(codec, int(quality)) for codec, qualities in mapping.items() for quality in qualities)


def study_levels(settings) -> dict[str, list[Level]]:
    """The levels of each part of the study, and ``all`` (their union, in plot order)."""
    parts = {"degradation": from_mapping(settings.levels), "recovery": from_mapping(settings.recovery),
             "two_stage": from_mapping(settings.two_stage)}
    parts["all"] = ordered(level for levels in parts.values() for level in levels)
    return parts
