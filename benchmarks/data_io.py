"""Decode throughput of the Parquet store and bytes per image per codec, on the real CIFAR-10.

    python benchmarks/data_io.py [--per-class 1000]

Side by side in one run, on the same images:
  * bare Pillow decoding of the original JPEG files, bytes already in memory (the machine's limit);
  * the store, single process (``StoredDataset.decode``): JPEG q75 and raw arrays;
  * the store through Ray Data (``read_split``, decoding in ``map_batches``): JPEG q75 and raw;
  * bytes per image and mean PSNR for each codec and quality.
CIFAR-10's images are already JPEG at about q75, so PSNR is measured against those decoded pixels.
"""
from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from common import cifar10_folder, machine, write_results  # noqa: E402
from frugalnas.data import ingest, open_dataset  # noqa: E402

CODECS = [("raw", None), ("png", None), ("jpeg", 95), ("jpeg", 75), ("jpeg", 50), ("jpeg", 25), ("jpeg", 10),
          ("webp", 90), ("webp", 75), ("webp", 50)]


def sample_folder(cifar: Path, per_class: int, work: Path) -> Path:
    """A folder of symlinks to the first ``per_class`` training images of each class."""
    out = work / f"cifar-sample-{per_class}"
    if out.exists():
        return out
    for class_dir in sorted((cifar / "train").iterdir()):
        target = out / class_dir.name
        target.mkdir(parents=True)
        for path in sorted(class_dir.iterdir())[:per_class]:
            (target / path.name).symlink_to(path)
    return out


def best_of(fn, repeats=3):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        count = fn()
        times.append(time.perf_counter() - start)
    return count / min(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--per-class", type=int, default=1000, help="training images per class (10 classes)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="frugalnas-io-"))
    folder = sample_folder(cifar10_folder(), args.per_class, work)
    files = sorted(p for p in folder.rglob("*.jpg"))
    n = len(files)
    print(f"{n} CIFAR-10 images", flush=True)

    rows = []
    stores = {}
    for codec, quality in CODECS:
        out = work / f"store-{codec}-{quality}"
        start = time.perf_counter()
        card = ingest(f"folder:{folder}", out, codec=codec, quality=quality, val_fraction=0, test_fraction=0)
        seconds = time.perf_counter() - start
        stores[(codec, quality)] = out
        rows.append({"codec": codec, "quality": quality, "bytes_per_image": card["bytes_per_image"],
                     "mean_psnr": card["mean_psnr"], "ingest_images_per_s": round(n / seconds, 1),
                     "parquet_bytes": sum(p.stat().st_size for p in out.rglob("*.parquet"))})
        print(rows[-1], flush=True)
    source_bytes = sum(p.stat().st_size for p in files)

    encoded = [p.read_bytes() for p in files]

    def bare_pillow():
        for data in encoded:
            with Image.open(io.BytesIO(data)) as image:
                np.asarray(image.convert("RGB"))
        return n

    throughput = {"pillow_bare_jpeg_files": best_of(bare_pillow)}
    for codec, quality in (("jpeg", 75), ("raw", None)):
        ds = open_dataset(stores[(codec, quality)])
        table = ds.table("train", ["image", "height", "width"])
        images, heights, widths = table["image"].to_pylist(), table["height"].to_numpy(), table["width"].to_numpy()
        throughput[f"store_{codec}_single_process"] = best_of(lambda: len(ds.decode(images, heights, widths)))

        def read_all():
            ds2 = open_dataset(stores[(codec, quality)])
            return len(ds2.arrays("train")[0])

        throughput[f"store_{codec}_arrays_from_disk"] = best_of(read_all)

    import ray

    from frugalnas.runtime.data import read_split

    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False, configure_logging=False)
    for codec, quality in (("jpeg", 75), ("raw", None)):
        def through_ray():
            count = 0
            for batch in read_split(stores[(codec, quality)], "train").iter_batches(batch_size=512, batch_format="numpy"):
                count += len(batch["id"])
            return count

        through_ray()  # warm-up: worker start-up is not decode throughput
        throughput[f"ray_data_{codec}"] = best_of(through_ray)
    ray.shutdown()
    throughput = {k: round(v, 1) for k, v in throughput.items()}
    print(throughput)

    md = [f"### Data store: decode throughput and bytes per image (real CIFAR-10, {n} train images 32x32)", "",
          f"Machine: {machine().get('cpu', '?')}, {os.cpu_count()} cores. Best of 3 runs; images/s.", "",
          "| path | images/s | vs bare Pillow |", "|---|---:|---:|"]
    base = throughput["pillow_bare_jpeg_files"]
    labels = {
        "pillow_bare_jpeg_files": "bare Pillow decode of the original JPEG files (bytes in memory): the machine's limit",
        "store_jpeg_single_process": "store JPEG q75, `StoredDataset.decode`, bytes in memory",
        "store_jpeg_arrays_from_disk": "store JPEG q75, `arrays()` (read Parquet + decode)",
        "store_raw_single_process": "store raw, `StoredDataset.decode`, bytes in memory",
        "store_raw_arrays_from_disk": "store raw, `arrays()` (read Parquet + decode)",
        "ray_data_jpeg": "store JPEG q75 through Ray Data (`read_split`, decode in map_batches)",
        "ray_data_raw": "store raw through Ray Data",
    }
    for key, label in labels.items():
        md.append(f"| {label} | {throughput[key]:,.0f} | {throughput[key] / base:.2f}x |")
    md += ["", f"Source JPEG files: {source_bytes / n:.0f} bytes per image on disk.", "",
           "| codec | quality | bytes/image | Parquet bytes/image | mean PSNR (dB) vs source pixels | ingest images/s |",
           "|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        md.append(f"| {r['codec']} | {r['quality'] or '-'} | {r['bytes_per_image']:.0f} | {r['parquet_bytes'] / n:.0f} | "
                  f"{r['mean_psnr']:.2f} | {r['ingest_images_per_s']:.0f} |")
    write_results("data_io", {"machine": machine(), "images": n, "throughput": throughput, "codecs": rows}, "\n".join(md))


if __name__ == "__main__":
    main()
