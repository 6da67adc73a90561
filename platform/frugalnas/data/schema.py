"""The on-disk layout of a dataset folder, shared by the writer (ingest) and the readers."""
from __future__ import annotations

import pyarrow as pa

CARD_FILE = "dataset.json"
SPLIT_ORDER = ("train", "val", "test")
ROWS_PER_FILE = 20_000

BOX_TYPE = pa.struct([("cls", pa.int32()), ("cx", pa.float32()), ("cy", pa.float32()),
                      ("w", pa.float32()), ("h", pa.float32())])
SCHEMA = pa.schema([
    ("id", pa.int64()),          # stable: the record's position in the source's enumeration
    ("image", pa.binary()),      # encoded bytes at the card's codec and quality
    ("label", pa.int32()),       # class index; -1 for a detection image with no objects
    ("boxes", pa.list_(BOX_TYPE)),  # YOLO-normalised boxes; null for classification-only sources
    ("height", pa.int32()),
    ("width", pa.int32()),
    ("source", pa.string()),     # file (or file#index) the image came from
])
