"""Derived data cached next to a dataset (embeddings, reference-model scores): how a cached file is
keyed and written.

A cached file belongs to one dataset and one set of settings. The settings go into the file name
(:func:`settings_key`), so different settings never overwrite each other; the dataset's fingerprint
goes into the file's report and is checked on reuse, so a folder re-ingested with other data is
never served stale results. Training seeds of the *consumer* (a search, a candidate) are no part of
the key: a cached embedding is shared by every run on that dataset.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

#: Card fields that change with every ingest but not with the data.
VOLATILE_CARD_FIELDS = ("ingest_seconds", "frugalnas_version")


def dataset_fingerprint(card: dict) -> str:
    """A short hash of a dataset card, less the fields that vary between identical ingests (the card
    holds the source, codec, quality, size, split sizes, class counts, stored bytes and PSNR)."""
    kept = {k: v for k, v in card.items() if k not in VOLATILE_CARD_FIELDS}
    return hashlib.sha256(json.dumps(kept, sort_keys=True, default=str).encode()).hexdigest()[:16]


def settings_key(settings: dict) -> str:
    """A short, stable hash of a settings mapping (order-independent), for file names."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:10]


def write_json_atomic(path: str | Path, payload: dict) -> Path:
    """Write ``payload`` as JSON via a temporary file and a rename, so no reader sees half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(payload, indent=2) + "\n")
    os.replace(tmp, path)
    return path


def read_cached_report(path: Path, fingerprint: str, wanted: dict) -> dict | None:
    """The report at ``path`` if it exists, was made from the dataset with ``fingerprint``, with the
    ``wanted`` settings, and the file it names still exists; else None (so it is made again)."""
    if not path.exists():
        return None
    try:
        report = json.loads(path.read_text())
    except json.JSONDecodeError:
        return None
    if report.get("dataset_fingerprint") != fingerprint:
        return None
    if any(report.get(k) != v for k, v in wanted.items()):
        return None
    return report if Path(report.get("path", "")).exists() else None
