"""Writers for small datasets in every supported on-disk format, good and broken, used by the tests."""
from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
from PIL import Image


def random_images(n, h, w, c, seed=0):
    rng = np.random.default_rng(seed)
    # smooth images compress well and make lossy round trips meaningful
    base = rng.integers(0, 256, size=(n, 1, 1, c))
    ramp_x = np.linspace(0, 60, w)[None, None, :, None]
    ramp_y = np.linspace(0, 40, h)[None, :, None, None]
    return np.clip(base + ramp_x + ramp_y, 0, 255).astype(np.uint8)


def write_cifar10(root: Path, n_train=20, n_test=10, bad_labels=False, mismatch=False) -> dict:
    root.mkdir(parents=True, exist_ok=True)
    names = [f"class{i}" for i in range(10)]
    with open(root / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": [n.encode() for n in names]}, f)
    rng = np.random.default_rng(1)
    out = {}
    for filename, n in (("data_batch_1", n_train), ("test_batch", n_test)):
        images = random_images(n, 32, 32, 3, seed=n)
        labels = [int(x) for x in rng.integers(0, 10, size=n)]
        if bad_labels and filename == "data_batch_1":
            labels[3] = 42
        data = images.transpose(0, 3, 1, 2).reshape(n, 3072)
        if mismatch and filename == "data_batch_1":
            labels = labels[:-2]
        with open(root / filename, "wb") as f:
            pickle.dump({b"data": data, b"labels": labels}, f)
        out[filename] = (images, labels)
    return out


def write_cifar100(root: Path, n=12):
    root.mkdir(parents=True, exist_ok=True)
    with open(root / "meta", "wb") as f:
        pickle.dump({b"fine_label_names": [f"fine{i}".encode() for i in range(100)]}, f)
    for filename in ("train", "test"):
        images = random_images(n, 32, 32, 3, seed=3)
        with open(root / filename, "wb") as f:
            pickle.dump({b"data": images.transpose(0, 3, 1, 2).reshape(n, 3072),
                         b"fine_labels": list(range(90, 90 + n % 10)) + [99] * (n - n % 10)}, f)


def write_idx(path: Path, array: np.ndarray, magic: int, gz: bool, truncate: int = 0):
    header = struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in array.shape)
    body = array.astype(np.uint8).tobytes()
    if truncate:
        body = body[:-truncate]
    raw = header + body
    if gz:
        path = path.with_name(path.name + ".gz")
        with gzip.open(path, "wb") as f:
            f.write(raw)
    else:
        path.write_bytes(raw)
    return path


def write_mnist(root: Path, n_train=15, n_test=6, gz=True, bad_label=False, extra_labels=0, truncate_images=False):
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(2)
    out = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = random_images(n, 28, 28, 1, seed=n)[..., 0]
        labels = rng.integers(0, 10, size=n + (extra_labels if prefix == "train" else 0))
        if bad_label and prefix == "train":
            labels[0] = 12
        write_idx(root / f"{prefix}-images-idx3-ubyte", images, 2051, gz, truncate=28 * 28 * 2 if (truncate_images and prefix == "train") else 0)
        write_idx(root / f"{prefix}-labels-idx1-ubyte", labels, 2049, gz)
        out[prefix] = (images, labels)
    return out


def write_folder(root: Path, splits=("train", "test"), per_class=4, classes=("cat", "dog", "owl"), size=16):
    for s_index, split in enumerate(splits):
        for c_index, name in enumerate(classes):
            folder = root / split / name if split else root / name
            folder.mkdir(parents=True, exist_ok=True)
            for i, pixels in enumerate(random_images(per_class, size, size, 3, seed=100 * s_index + 10 * c_index)):
                Image.fromarray(pixels).save(folder / f"{i:03d}.png")
    return root


def write_yolo(root: Path, n=6, size=32):
    (root / "images" / "train").mkdir(parents=True)
    (root / "labels" / "train").mkdir(parents=True)
    (root / "data.yaml").write_text("names: [box, ring]\npath: .\ntrain: images/train\n")
    for i, pixels in enumerate(random_images(n, size, size, 3, seed=9)):
        Image.fromarray(pixels).save(root / "images" / "train" / f"im{i}.png")
        (root / "labels" / "train" / f"im{i}.txt").write_text(f"{i % 2} 0.5 0.5 0.25 0.5\n0 0.2 0.2 0.1 0.1\n")
    return root


def voc_xml(filename: str, size, objects) -> str:
    """A Pascal VOC annotation; ``objects`` is a list of (name, xmin, ymin, xmax, ymax); size (w, h) or None."""
    parts = [f"<annotation><folder>JPEGImages</folder><filename>{filename}</filename>"]
    if size is not None:
        parts.append(f"<size><width>{size[0]}</width><height>{size[1]}</height><depth>3</depth></size>")
    for name, *corners in objects:
        box = "".join(f"<{k}>{v}</{k}>" for k, v in zip(("xmin", "ymin", "xmax", "ymax"), corners))
        parts.append(f"<object><name>{name}</name><difficult>0</difficult><bndbox>{box}</bndbox></object>")
    return "".join(parts) + "</annotation>\n"


def write_voc(root: Path, n=8, width=40, height=30, splits=(("train", 5), ("val", 2), ("test", 1)), seed=11):
    """A small VOC folder: image i has a 'cat' box and, for odd i, a larger 'dog' box.

    ``splits`` lists (split, count) in order, consuming images 0..n-1; None writes no ImageSets.
    Returns {stem: [(name, xmin, ymin, xmax, ymax), ...]}."""
    (root / "Annotations").mkdir(parents=True)
    (root / "JPEGImages").mkdir()
    objects = {}
    for i, pixels in enumerate(random_images(n, height, width, 3, seed=seed)):
        stem = f"im_{i:03d}"
        Image.fromarray(pixels).save(root / "JPEGImages" / f"{stem}.jpg", quality=95)
        objects[stem] = [("cat", 1, 2, 11, 12)] + ([("dog", 10, 5, 40, 30)] if i % 2 else [])
        (root / "Annotations" / f"{stem}.xml").write_text(voc_xml(f"{stem}.jpg", (width, height), objects[stem]))
    if splits is not None:
        (root / "ImageSets" / "Main").mkdir(parents=True)
        stems, start = sorted(objects), 0
        for split, count in splits:
            (root / "ImageSets" / "Main" / f"{split}.txt").write_text("".join(s + "\n" for s in stems[start:start + count]))
            start += count
    return objects
