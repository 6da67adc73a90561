"""Dataset sources, registered by the name used in ``frugalnas ingest NAME[:ARG]``."""
from frugalnas.data.sources import cifar, digits, folder, mnist, shapes, voc, yolo  # noqa: F401  (registration)
from frugalnas.data.sources.base import SOURCES, Record, Source, make_source, parse_source_spec

__all__ = ["SOURCES", "Record", "Source", "make_source", "parse_source_spec"]
