"""Shared helpers for the benchmark scripts: where the real CIFAR-10 lives, machine facts, writing results."""
from __future__ import annotations

import json
import os
import platform
import subprocess
import tarfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
SHARED_CIFAR = HERE.parent.parent / "shared" / "data" / "cifar10-jpg.tar.gz"


def cifar10_folder(work: Path | None = None) -> Path:
    """The real CIFAR-10 image folder (train/<class>/*.jpg, test/<class>/*.jpg), unpacked from
    ../shared/data on first use. Override with FRUGALNAS_CIFAR10=/path/to/folder."""
    if os.environ.get("FRUGALNAS_CIFAR10"):
        return Path(os.environ["FRUGALNAS_CIFAR10"])
    work = work or Path(os.environ.get("FRUGALNAS_BENCH_WORK", "/tmp/frugalnas-bench"))
    target = work / "cifar10-jpg"
    if not (target / "train").is_dir():
        if not SHARED_CIFAR.exists():
            raise SystemExit(f"CIFAR-10 not found: set FRUGALNAS_CIFAR10 or provide {SHARED_CIFAR}")
        target.mkdir(parents=True, exist_ok=True)
        with tarfile.open(SHARED_CIFAR) as archive:
            archive.extractall(target, filter="data")
    return target


def machine() -> dict:
    info = {"cpu_count": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()}
    try:
        info["cpu"] = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    try:
        info["commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                        cwd=HERE).stdout.strip()
    except OSError:
        pass
    return info


def write_results(name: str, payload: dict, markdown: str) -> None:
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(payload, indent=2) + "\n")
    (RESULTS / f"{name}.md").write_text(markdown.rstrip() + "\n")
    print(markdown)


def reruns_text(meta: dict) -> str:
    """The rows re-run after the run above (``--rerun``), if any."""
    parts = [f"{', '.join(f'`{r}`' for r in x['rows'])} on {x['when']} at commit {x['commit']} "
             f"({x['seconds'] / 60:.0f} min)" for x in meta.get("reruns", [])]
    return (" Re-run later with the code of that day (`--rerun`), on the same seeds: " + "; ".join(parts)
            + "; the other rows are from the run above.") if parts else ""
