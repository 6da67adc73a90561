"""``frugalnas run`` on a detection data set: what differs from classification.

The search itself is the same Ray Tune search (any strategy, any scheduler, MLflow tracking); only
two things are the task's own, registered under ``detection``:

* how candidates train (:func:`detection_trials`): the stored data set is written once as a YOLO
  folder, each candidate is an ultralytics model YAML of the ``yolo`` space trained by ultralytics'
  trainer on the images its selector picks (:mod:`frugalnas.runtime.detect_candidates`), and the
  score is validation mAP50-95;
* how the best is retrained and tested (:func:`detection_final`): from scratch on the full training
  split, tested on the test split, saved as ``OUT/best.yaml`` (an ultralytics model YAML) and
  ``OUT/best.pt`` (ultralytics weights: ``ultralytics.YOLO("OUT/best.pt")``).
"""
from __future__ import annotations

import shutil
import time
from dataclasses import asdict
from pathlib import Path

from frugalnas.data.store import open_dataset
from frugalnas.data.yolo_export import export_yolo
from frugalnas.errors import ConfigError
from frugalnas.runtime.experiment import TASK_FINALS
from frugalnas.runtime.search_engines import TASK_TRIALS
from frugalnas.selection import make_selector
from frugalnas.train.detect import DetectionSettings, DetectionTraining, evaluate_detector
from frugalnas.train.yolo_env import prepare_ultralytics

METRIC = "map50_95"


def check_detection_space(space) -> None:
    if getattr(space, "task", "classification") != "detection":
        raise ConfigError(f"the data set is a detection data set, but the {space.family!r} space builds classifiers: "
                          "use a detection space (space: yolo)")


def detection_settings(config, epochs: int) -> DetectionSettings:
    gpu = config.resources.gpus_per_trial > 0
    return DetectionSettings(epochs=epochs, batch_size=config.final.batch_size, image_size=config.detection.image_size,
                             seed=config.seed, hardness=config.detection.hardness, device="0" if gpu else "cpu",
                             train_args=dict(config.detection.train_args))


def detection_objectives(config) -> list[str]:
    """``search.objectives`` for detection: left at its default it means the score, mAP50-95."""
    if "objectives" not in config.search.model_fields_set:
        return [METRIC]
    return list(config.search.objectives)


def detection_trials(*, config, space, dataset_dir: Path, latents_path: str | None, log) -> dict:
    from ray import tune

    from frugalnas.runtime.detect_candidates import DetectionContext, detection_cost, train_detection_candidate

    check_detection_space(space)
    prepare_ultralytics()
    dataset = open_dataset(dataset_dir)
    if "val" not in dataset.card["splits"]:
        raise ConfigError(f"{dataset_dir} has no val split to score detection candidates on: set dataset.val_fraction > 0")
    settings = detection_settings(config, config.search.epochs_per_candidate)  # checks train_args
    export = export_yolo(dataset)
    log(f"detection: ultralytics trains from the YOLO folder {export.root} (data.yaml with absolute paths)")
    num_classes = len(dataset.classes)
    context = DetectionContext(dataset_dir=str(dataset_dir), export_dir=str(export.root),
                               space=space.config.model_dump(mode="json"), selection=config.selection.model_dump(),
                               train=asdict(settings),
                               latents_path=latents_path)
    return {"trainable": tune.with_parameters(train_detection_candidate, context=context), "metric": METRIC,
            "metrics_fn": lambda arch: detection_cost(space, arch, num_classes, settings.image_size),
            "objectives": detection_objectives(config)}


def detection_final(config, space, arch, dataset_dir: Path, out: Path, log) -> dict:
    """Retrain ``arch`` from scratch on the full training split (ultralytics' best epoch on val is
    kept, as ultralytics does), test it on the test split, write ``OUT/best.yaml`` and ``OUT/best.pt``."""
    from frugalnas.runtime.detect_candidates import train_labels

    prepare_ultralytics()
    dataset = open_dataset(dataset_dir)
    if "test" not in dataset.card["splits"]:
        raise ConfigError(f"{dataset_dir} has no test split to test the final model on: set dataset.test_fraction > 0")
    export = export_yolo(dataset)
    settings = detection_settings(config, config.final.epochs)
    model_yaml = out / "best.yaml"
    model_yaml.write_text(space.model_yaml(arch, len(dataset.classes), names=dataset.classes))
    ids, labels = train_labels(dataset)
    selector = make_selector("full", ids, labels, seed=config.seed)
    workdir = out / "final"
    if workdir.exists():
        shutil.rmtree(workdir)  # a fresh start (a resumed run retrains from scratch too)

    def progress(epoch, training):
        if epoch.epoch % 5 == 0 or epoch.epoch == settings.epochs:
            log(f"  final epoch {epoch.epoch}/{settings.epochs}: val mAP50-95 {epoch.map50_95:.4f}, "
                f"mAP50 {epoch.map50:.4f}")

    started = time.perf_counter()
    training = DetectionTraining(model_yaml, export, selector, settings, workdir, on_epoch=progress,
                                 evaluate_best_at_end=True)
    training.run()
    weights = training.weights_dir / "best.pt"
    if not weights.exists():
        weights = training.weights_dir / "last.pt"
    shutil.copyfile(weights, out / "best.pt")
    wall = time.perf_counter() - started
    test = evaluate_detector(out / "best.pt", export, "test", settings, workdir)
    from ultralytics import YOLO

    model = YOLO(str(out / "best.pt")).model
    log(f"final: test mAP50-95 {test['map50_95']:.4f}, mAP50 {test['map50']:.4f}")
    return {"final_test_map50_95": test["map50_95"], "final_test_map50": test["map50"],
            "final_test_precision": test["precision"], "final_test_recall": test["recall"],
            "final_params": sum(p.numel() for p in model.parameters()), "final_epochs": settings.epochs,
            "final_images_processed": training.images_processed, "final_wall_seconds": round(wall, 3),
            "test_map50_95_per_class": test["per_class_map50_95"],
            "model_files": {"yaml": str(model_yaml), "weights": str(out / "best.pt")}, "model": model}


TASK_TRIALS.register("detection")(detection_trials)
TASK_FINALS.register("detection")(detection_final)
