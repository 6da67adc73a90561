"""Detection training with ultralytics (slow: real training on generated shapes at 64 px).

A selector's plan decides each epoch's images, a stopped run resumes where it stopped, and
`frugalnas run` on a detection job searches, retrains and writes best.yaml / best.pt that
ultralytics itself builds, loads and predicts with.
"""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from click.testing import CliRunner

from frugalnas.cli import cli

torch.set_num_threads(1)
JOBS = Path(__file__).resolve().parent.parent / "jobs"
TINY_ARCH = "w0.125-conv3.C2fx1-conv3.C2fx1-dw5.C3k2x1-ghost3.C2fx1-sppf5"
TRAIN_ARGS = {"optimizer": "AdamW", "lr0": 0.003, "nbs": 16, "warmup_epochs": 0}


class Stop(Exception):
    """Stands in for a run stopped after an epoch (Ctrl+C, a lost worker)."""


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    from frugalnas.data import ingest, open_dataset
    from frugalnas.data.yolo_export import export_yolo

    out = tmp_path_factory.mktemp("shapes") / "dataset"
    ingest("shapes:150", out, task="detection", image_size=64, codec="png", val_fraction=0.2, test_fraction=0.2)
    return open_dataset(out), export_yolo(out)


def _training(shapes, workdir, on_epoch, epochs=3):
    from frugalnas.runtime.detect_candidates import train_labels
    from frugalnas.selection import make_selector
    from frugalnas.spaces import load_space
    from frugalnas.train.detect import DetectionSettings, DetectionTraining

    dataset, export = shapes
    ids, labels = train_labels(dataset)
    selector = make_selector("dynamic-random", ids, labels, subset_size=32, hardness=0.3, mastery=0.05,
                             warmup_epochs=1, seed=0)
    space = load_space("yolo")
    model = Path(workdir) / "model.yaml"
    model.parent.mkdir(parents=True, exist_ok=True)
    model.write_text(space.model_yaml(space.parse(TINY_ARCH), len(dataset.classes)))
    settings = DetectionSettings(epochs=epochs, batch_size=16, image_size=64, train_args=TRAIN_ARGS)
    return DetectionTraining(model, export, selector, settings, workdir, on_epoch=on_epoch)


@pytest.mark.slow
def test_each_epoch_trains_the_planned_images_and_a_stopped_run_resumes(shapes, tmp_path):
    from frugalnas.data.yolo_export import YoloExport

    trained, checkpoints = [], tmp_path / "checkpoint"

    def first_run(epoch, training):
        loader_ids = sorted(YoloExport.id_of(f) for f in training.trainer.train_loader.dataset.im_files)
        trained.append((loader_ids, training.current_ids.tolist()))
        if epoch.epoch == 2:
            training.save_checkpoint(checkpoints)
            raise Stop

    first = _training(shapes, tmp_path / "a", first_run)
    with pytest.raises(Stop):
        first.run()
    assert [loaded for loaded, _ in trained] == [planned for _, planned in trained]  # the loader held the plan
    assert all(len(planned) == 32 for _, planned in trained)
    assert first.history[0]["train_accuracy"] is not None  # dynamic-random got per-image feedback
    assert first.history[1]["images_processed"] == 64
    observed = [r for r in first.selector.history if r["train"]]
    assert [r["n_observed"] for r in observed] == [32, 32]

    resumed_epochs = []
    second = _training(shapes, tmp_path / "b", lambda epoch, training: resumed_epochs.append(epoch))
    second.load_state_dict(torch.load(checkpoints / "selection.pt", weights_only=False))
    second.run(resume_from=checkpoints / "last.pt")
    assert [e.epoch for e in resumed_epochs] == [3]  # only the epoch that was left
    assert [r["epoch"] for r in second.history] == [1, 2, 3]
    assert second.images_processed == 96 and resumed_epochs[0].images_processed == 96
    assert second.selector.history[:len(first.selector.history)] == first.selector.history
    for key in ("map50_95", "map50", "train_seconds", "hardness_seconds", "val_seconds"):
        assert np.isfinite(second.history[-1][key])


def _run(tmp_path, *overrides):
    runner = CliRunner()
    result = runner.invoke(cli, ["run", str(JOBS / "detect_shapes.yaml"), "--out", str(tmp_path / "out"), "--json",
                                 *[part for o in overrides for part in ("--set", o)]])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout.strip().splitlines()[-1]), result


@pytest.mark.slow
def test_detection_search_end_to_end_and_the_exported_model_works_in_ultralytics(tmp_path, ray_session):
    summary, result = _run(
        tmp_path, "dataset.source=shapes:160", "embedding.epochs=1", "selection.subset_size=48",
        "selection.warmup_epochs=1", "search.budget=2", "search.epochs_per_candidate=2",
        "search.params={population_size: 2, sample_size: 2}", "final.epochs=2",
        "space={name: yolo, width_multiples: [0.125], repeats: [1]}", "resources.max_concurrent_trials=1")
    out = tmp_path / "out"
    for key in ("best_arch", "final_test_map50_95", "final_test_map50", "search_images_processed",
                "search_wall_seconds", "final_params", "trials", "metric"):
        assert key in summary
    assert summary["metric"] == "map50_95" and summary["selection"] == "dds"
    trials = summary["trials"]
    assert len(trials) == 2 and len({t["arch"] for t in trials}) == 2
    assert all(0 < t["images_processed"] <= 48 * 2 and 0 <= t["map50_95"] <= t["map50"] <= 1 for t in trials)
    assert summary["best_arch"] == max(trials, key=lambda t: t["map50_95"])["arch"]
    assert 0 <= summary["final_test_map50_95"] <= summary["final_test_map50"] <= 1
    assert re.search(r"candidate [12]/2 \(2 finished\): val mAP50-95 ", result.stderr)
    assert "final: test mAP50-95" in result.output

    # the exported model, with ultralytics itself
    from ultralytics import YOLO

    from frugalnas.spaces import load_space

    assert yaml.safe_load((out / "best.yaml").read_text()) == load_space("yolo").model_dict(
        load_space("yolo").parse(summary["best_arch"]), 4)
    built = YOLO(str(out / "best.yaml"))  # `yolo train model=OUT/best.yaml` builds it the same way
    assert built.model.yaml["nc"] == 4
    loaded = YOLO(str(out / "best.pt"))
    assert loaded.names == {0: "circle", 1: "square", 2: "triangle", 3: "cross"}
    images = sorted((out / "dataset" / "yolo" / "images" / "test").iterdir())[:3]
    predictions = loaded.predict([str(p) for p in images], imgsz=64, verbose=False)
    assert len(predictions) == 3 and all(p.boxes is not None for p in predictions)
    metrics = loaded.val(data=str(out / "dataset" / "yolo" / "data.yaml"), split="test", imgsz=64, batch=16,
                         plots=False, verbose=False, project=str(tmp_path / "val"), name="v")
    assert metrics.box.map == pytest.approx(summary["final_test_map50_95"], abs=1e-6)

    # MLflow: one candidate run per trial, with the mAP metrics per epoch
    import mlflow

    client = mlflow.MlflowClient(summary["tracking"]["uri"])
    runs = client.search_runs([summary["tracking"]["experiment_id"]],
                              filter_string=f"tags.mlflow.parentRunId = '{summary['tracking']['run_id']}'")
    assert len(runs) == 2 and all("map50_95" in r.data.metrics and "map50" in r.data.metrics for r in runs)
    parent = client.get_run(summary["tracking"]["run_id"])
    assert parent.data.metrics["final_test_map50_95"] == pytest.approx(summary["final_test_map50_95"])
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id, "ultralytics")}
    assert artifacts == {"ultralytics/best.yaml", "ultralytics/best.pt"}

    # frugalnas export: the run's OUT/export holds the ultralytics files, the architecture and the card,
    # and the registered model version carries them and the summary
    assert set(summary["export"]["formats"]) == {"ultralytics", "architecture", "card"}
    assert (out / "export" / "best.pt").read_bytes() == (out / "best.pt").read_bytes()
    doc = yaml.safe_load((out / "export" / "architecture.yaml").read_text())
    assert doc["task"] == "detection" and doc["arch"] == summary["best_arch"] and doc["family"] == "yolo"
    assert doc["test_map50_95"] == summary["final_test_map50_95"] and doc["choices"]
    assert "test mAP50-95" in (out / "export" / "MODEL_CARD.md").read_text()
    version = client.get_model_version(summary["tracking"]["experiment"], summary["tracking"]["registered_model_version"])
    assert version.tags["frugalnas.best_arch"] == summary["best_arch"]
    assert float(version.tags["frugalnas.final_test_map50_95"]) == pytest.approx(summary["final_test_map50_95"])
    again = CliRunner().invoke(cli, ["export", str(out), "--to", str(tmp_path / "again"), "--json"])
    assert again.exit_code == 0, again.output
    assert YOLO(str(tmp_path / "again" / "best.pt")).names == loaded.names


@pytest.mark.slow
def test_the_tune_trainable_reports_every_epoch_and_resumes_from_its_checkpoint(shapes, tmp_path, monkeypatch):
    """train_detection_candidate with Tune's session calls stood in for: a trial stopped after its first
    epoch comes back through tune.get_checkpoint() and trains only the epoch that was left."""
    from dataclasses import asdict

    from ray import tune

    from frugalnas.runtime import detect_candidates
    from frugalnas.train.detect import DetectionSettings

    dataset, export = shapes
    context = detect_candidates.DetectionContext(
        dataset_dir=str(dataset.root), export_dir=str(export.root),
        space={"family": "yolo", "width_multiples": [0.125], "repeats": [1]},
        selection={"policy": "dynamic-random", "subset_size": 32, "hardness": 0.3, "mastery": 0.05, "warmup_epochs": 1},
        train=asdict(DetectionSettings(epochs=2, batch_size=16, image_size=64, hardness="f1", train_args=TRAIN_ARGS)))
    reports, saved = [], tmp_path / "saved"

    class Context:
        def get_trial_dir(self):
            return str(tmp_path / "trial")

    def report(metrics, checkpoint=None):
        reports.append(metrics)
        if not saved.exists():  # the first report: keep its checkpoint and stop the trial there
            shutil.copytree(checkpoint.path, saved)
            raise Stop

    monkeypatch.setattr(tune, "get_context", lambda: Context())
    monkeypatch.setattr(tune, "report", report)
    monkeypatch.setattr(tune, "get_checkpoint", lambda: None)
    with pytest.raises(Stop):
        detect_candidates.train_detection_candidate({"arch": TINY_ARCH}, context)
    monkeypatch.setattr(tune, "get_checkpoint", lambda: tune.Checkpoint.from_directory(str(saved)))
    detect_candidates.train_detection_candidate({"arch": TINY_ARCH}, context)
    assert [r["epoch"] for r in reports] == [1, 2]
    assert [r["images_processed"] for r in reports] == [32, 64]
    for key in ("map50_95", "map50", "params", "flops", "setup_seconds", "train_seconds", "val_seconds",
                "hardness_seconds", "train_accuracy"):  # the F1 hardness pass ran for dynamic-random
        assert key in reports[-1]
    assert reports[-1]["arch"] == TINY_ARCH and reports[-1]["params"] > 0
