"""Detection in the compression study: a detector's mAP per test set, kept per image so that it can
be bootstrapped like a classifier's accuracy.

mAP is not a mean over images, so a bootstrap replicate cannot reweight per-image scores: it
recomputes mAP from the matched predictions of the resampled images (an image drawn twice counts
twice). ultralytics' validator does the matching (letterboxing, NMS, IoU 0.50:0.95) and its
``ap_per_class`` the averaging; this module only keeps the validator's per-image statistics, which
it otherwise concatenates and discards.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

STAT_KEYS = ("tp", "conf", "pred_cls", "pred_image", "target_cls", "target_image")


def image_stats(weights: str | Path, export, split: str, settings, save_dir: str | Path, ids: np.ndarray) -> dict:
    """Per-image matching statistics of ``weights`` on ``split`` of a YOLO export, with the images
    indexed by their position in ``ids`` (sorted stored ids): ``tp`` (predictions, 10) at IoU
    0.50:0.95, ``conf``, ``pred_cls``, ``pred_image``, ``target_cls``, ``target_image``."""
    from frugalnas.train.yolo_env import prepare_ultralytics

    prepare_ultralytics()
    from ultralytics import YOLO

    from frugalnas.data.yolo_export import YoloExport

    # a data YAML of its own: ultralytics wants train and val entries, and a level's export may hold
    # only its test split
    import yaml

    save_dir = Path(save_dir)
    save_dir.mkdir(parents=True, exist_ok=True)
    images = str(export.root / "images" / split)
    data_yaml = save_dir / "data.yaml"
    data_yaml.write_text(yaml.safe_dump({"path": str(export.root), "train": images, "val": images, split: images,
                                         "nc": len(export.info["classes"]),
                                         "names": dict(enumerate(export.info["classes"]))}, sort_keys=False))
    metrics = YOLO(str(weights)).val(validator=_per_image_validator(), data=str(data_yaml), split=split,
                                     imgsz=settings.image_size, batch=settings.batch_size, device=settings.device,
                                     plots=False, verbose=False, workers=0, project=str(save_dir),
                                     name=f"test-{split}", exist_ok=True)
    position = {int(image_id): i for i, image_id in enumerate(ids)}
    parts = {key: [] for key in STAT_KEYS}
    seen = set()
    for stat in metrics.per_image:
        index = position[YoloExport.id_of(stat["im_name"])]
        seen.add(index)
        predictions = len(stat["conf"])
        parts["tp"].append(np.asarray(stat["tp"], dtype=bool).reshape(predictions, -1))
        parts["conf"].append(np.asarray(stat["conf"], dtype=np.float32))
        parts["pred_cls"].append(np.asarray(stat["pred_cls"], dtype=np.int16))
        parts["pred_image"].append(np.full(predictions, index, dtype=np.int32))
        parts["target_cls"].append(np.asarray(stat["target_cls"], dtype=np.int16))
        parts["target_image"].append(np.full(len(stat["target_cls"]), index, dtype=np.int32))
    if len(seen) != len(ids):
        raise RuntimeError(f"the validator scored {len(seen)} of the {len(ids)} images of {export.root} ({split})")
    return {key: np.concatenate(values) if values else np.zeros(0) for key, values in parts.items()}


def mean_ap(stats: dict, counts: np.ndarray | None = None) -> tuple[float, float]:
    """(mAP50-95, mAP50) of per-image statistics, each image counted ``counts[i]`` times (a bootstrap
    resample); every image once when ``counts`` is None. Classes are those with targets, as in
    ultralytics."""
    from ultralytics.utils.metrics import ap_per_class

    tp, conf, pred_cls, target_cls = stats["tp"], stats["conf"], stats["pred_cls"], stats["target_cls"]
    if counts is not None:
        pred_times, target_times = counts[stats["pred_image"]], counts[stats["target_image"]]
        tp, conf, pred_cls = (np.repeat(a, pred_times, axis=0) for a in (tp, conf, pred_cls))
        target_cls = np.repeat(target_cls, target_times)
    if len(target_cls) == 0:
        return 0.0, 0.0
    if len(conf) == 0:
        return 0.0, 0.0
    ap = ap_per_class(tp, conf, pred_cls, target_cls)[5]  # (classes with targets, 10 IoU thresholds)
    return float(ap.mean()), float(ap[:, 0].mean())


def _per_image_validator():
    """ultralytics' detection validator, also keeping each image's matching statistics (which it
    concatenates and clears when it computes mAP)."""
    from ultralytics.models.yolo.detect import DetectionValidator

    class PerImageValidator(DetectionValidator):
        def init_metrics(self, model):
            super().init_metrics(model)
            self.per_image = []
            update = self.metrics.update_stats

            def keep(stat):
                self.per_image.append({k: stat[k] for k in ("tp", "conf", "pred_cls", "target_cls", "im_name")})
                update(stat)

            self.metrics.update_stats = keep

        def get_stats(self):
            self.metrics.per_image = self.per_image
            return super().get_stats()

    return PerImageValidator
