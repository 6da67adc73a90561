"""Datasets: sources, codecs and the compressed Parquet store.

``ingest(source, out)`` writes a dataset folder; ``open_dataset(folder)`` reads it back.
"""
from frugalnas.data import video_codecs  # noqa: F401  (registers h264, h265)
from frugalnas.data.codecs import CODECS, Codec, make_codec, psnr, ssim
from frugalnas.data.ingest import ingest
from frugalnas.data.shards import curriculum_shards
from frugalnas.data.sources import SOURCES, make_source
from frugalnas.data.store import StoredDataset, open_dataset

__all__ = ["CODECS", "Codec", "SOURCES", "StoredDataset", "curriculum_shards", "ingest", "make_codec",
           "make_source", "open_dataset", "psnr", "ssim"]
