"""Setting ultralytics up to run offline and quietly inside frugalnas (call before training with it).

ultralytics reaches for the network in a few places (an online check, a font download in its
dataset check, AMP checks on CUDA) and registers its own MLflow and Ray Tune callbacks, which would
report every epoch a second time into whatever MLflow run or Tune trial is active. frugalnas tracks
and reports itself, so in every process that trains (Ray workers included) :func:`prepare_ultralytics`
switches those off before the first trainer is built.
"""
from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

#: ultralytics integrations that must not run inside frugalnas (it reports to Tune and MLflow itself).
INTEGRATIONS_OFF = {"mlflow": False, "raytune": False, "tensorboard": False, "wandb": False, "comet": False,
                    "clearml": False, "dvc": False, "sync": False}
FONT_NAME = "Arial.ttf"  # what ultralytics' dataset check looks for (and would download)


def default_config_dir() -> Path:
    """Where ultralytics keeps its settings and font for frugalnas runs: ``YOLO_CONFIG_DIR`` if the
    user set it, else ``$XDG_CACHE_HOME/frugalnas`` (``~/.cache/frugalnas``)."""
    if os.environ.get("YOLO_CONFIG_DIR"):
        return Path(os.environ["YOLO_CONFIG_DIR"]).expanduser()
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "frugalnas"


def prepare_ultralytics(config_dir: str | Path | None = None):
    """Make ultralytics offline and silent in this process; returns the ``ultralytics`` module.

    Sets ``YOLO_OFFLINE``, ``YOLO_AUTOINSTALL=false`` and ``YOLO_CONFIG_DIR`` (when ultralytics is not
    imported yet), puts a font where its dataset check looks (a copy of matplotlib's DejaVuSans, so
    nothing is downloaded), and turns its integrations off (:data:`INTEGRATIONS_OFF`). Cheap to call
    again: settings are only written when they differ.
    """
    os.environ["YOLO_OFFLINE"] = "1"
    os.environ["YOLO_AUTOINSTALL"] = "false"
    os.environ.setdefault("YOLO_VERBOSE", "false")
    if "ultralytics" not in sys.modules:
        os.environ["YOLO_CONFIG_DIR"] = str(Path(config_dir or default_config_dir()).expanduser().resolve())
    import ultralytics
    from ultralytics.utils import SETTINGS, USER_CONFIG_DIR

    font = Path(USER_CONFIG_DIR) / FONT_NAME
    if not font.exists():
        import matplotlib

        source = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
        partial = font.with_name(f".{FONT_NAME}.{os.getpid()}")
        shutil.copyfile(source, partial)
        os.replace(partial, font)  # atomic: concurrent workers never see half a font
    changed = {k: v for k, v in INTEGRATIONS_OFF.items() if SETTINGS.get(k) != v}
    if changed:
        SETTINGS.update(changed)
    return ultralytics
