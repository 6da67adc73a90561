"""`frugalnas export`: a finished run's model as TorchScript / torch.export / ONNX files checked against
the PyTorch model on real test images, the architecture document, the model card, the registered
MLflow model carrying the same files, and detection runs' ultralytics files."""
from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
import torch
import yaml
from click.testing import CliRunner

from frugalnas.cli import cli
from frugalnas.config import parse_config
from frugalnas.data import ingest, open_dataset
from frugalnas.data.torch_dataset import ImageSplit
from frugalnas.export import ATOL, RTOL, export_run, onnx_available
from frugalnas.selection import make_selector
from frugalnas.spaces import load_space
from frugalnas.train.classify import TrainSettings, evaluate, train_with_selector

torch.set_num_threads(1)
ARCH = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"
SPACE = {"name": "nb201", "network": {"channels": 4, "cells_per_stage": 1, "stages": 2}}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """The output folder of a finished classification run, as `frugalnas run` leaves it: a tiny
    NAS-Bench-201 network trained for two epochs on the real digits (8x8, grey)."""
    out = tmp_path_factory.mktemp("run") / "out"
    ingest("digits", out / "dataset", codec="png", seed=0)
    config = parse_config({"name": "digits-export", "space": SPACE, "final": {"epochs": 2}})
    name, overrides = config.space_spec()
    space = load_space(name, overrides)
    dataset = open_dataset(out / "dataset")
    train, test = ImageSplit(dataset, "train"), ImageSplit(dataset, "test")
    torch.manual_seed(0)
    model = space.build(space.parse(ARCH), len(dataset.classes), dataset.channels)
    train_with_selector(model, train, make_selector("full", train.ids, train.labels, seed=0),
                        TrainSettings(epochs=2, batch_size=64, seed=0))
    torch.save(model.state_dict(), out / "final_model.pt")
    (out / "config.json").write_text(json.dumps(config.model_dump(), indent=2))
    summary = {"experiment": "digits-export", "strategy": "evolution", "selection": "dds", "space": "nb201",
               "space_settings": space.config.model_dump(mode="json"), "best_arch": ARCH,
               "search_images_processed": 12345, "search_wall_seconds": 67.8, "final_test_accuracy": evaluate(model, test),
               "final_params": sum(p.numel() for p in model.parameters()), "final_epochs": 2,
               "final_images_processed": 2 * len(train), "final_wall_seconds": 1.5, "total_wall_seconds": 99.0,
               "dataset": {"path": str(out / "dataset"), "name": "digits"},
               "trials": [{"arch": ARCH, "candidate": 1, "accuracy": 0.5}]}
    (out / "summary.json").write_text(json.dumps(summary))
    return out


def test_export_writes_every_format_and_each_model_file_reproduces_the_model(run_dir, tmp_path):
    to = tmp_path / "bundle"
    outcome = CliRunner().invoke(cli, ["export", str(run_dir), "--to", str(to), "--json"])
    assert outcome.exit_code == 0, outcome.output
    report = json.loads(outcome.stdout.strip().splitlines()[-1])
    expected = {"model.ts", "model.pt2", "architecture.yaml", "architecture.json", "MODEL_CARD.md",
                "check_batch.npz", "export.json"} | ({"model.onnx"} if onnx_available() else set())
    assert set(report["files"]) == expected == {p.name for p in to.iterdir()}
    for name in ("torchscript", "pt2") + (("onnx",) if onnx_available() else ()):
        check = report["formats"][name]["check"]
        assert check["batch"] == 16 and check["top1_agreement"] == 1.0 and check["max_abs_diff"] <= ATOL

    # Independently of frugalnas: load each file and compare with the trained module on real test images.
    space = load_space(SPACE["name"], {k: v for k, v in SPACE.items() if k != "name"})
    dataset = open_dataset(run_dir / "dataset")
    model = space.build(space.parse(ARCH), 10, 1)
    model.load_state_dict(torch.load(run_dir / "final_model.pt", weights_only=True))
    model.eval()
    images = ImageSplit(dataset, "test").images[100:137]  # other images, another batch size
    with torch.no_grad():
        want = model(images).numpy()
        loaded = {"ts": torch.jit.load(str(to / "model.ts"))(images).numpy(),
                  "pt2": torch.export.load(str(to / "model.pt2")).module()(images).numpy()}
    if onnx_available():
        import onnxruntime

        session = onnxruntime.InferenceSession(str(to / "model.onnx"), providers=["CPUExecutionProvider"])
        loaded["onnx"] = session.run(None, {"images": images.numpy()})[0]
    for name, got in loaded.items():
        assert np.allclose(got, want, atol=ATOL, rtol=RTOL), name
    check = np.load(to / "check_batch.npz")
    assert check["inputs"].shape == (16, 1, 8, 8) and 0 <= check["inputs"].min() and check["inputs"].max() <= 1

    doc = yaml.safe_load((to / "architecture.yaml").read_text())
    assert doc == json.loads((to / "architecture.json").read_text())
    assert doc["arch"] == ARCH and doc["space"] == "nb201" and doc["family"] == "nb201"
    assert doc["choices"]["1<-0"] == "nor_conv_3x3" and len(doc["choices"]) == 6
    assert doc["params"] == sum(p.numel() for p in model.parameters())
    assert doc["flops"] == space.count_flops(space.parse(ARCH), 10, 1, 8)
    assert doc["test_accuracy"] == json.loads((run_dir / "summary.json").read_text())["final_test_accuracy"]
    assert doc["dataset"]["name"] == "digits" and doc["dataset"]["splits"] == dataset.card["splits"]
    assert doc["input"]["channels"] == 1 and doc["input"]["height"] == 8
    # the document alone rebuilds the architecture
    rebuilt = load_space(doc["space_settings"]).build(load_space(doc["space_settings"]).parse(doc["arch"]), 10, 1)
    assert set(rebuilt.state_dict()) == set(model.state_dict())

    card = (to / "MODEL_CARD.md").read_text()
    for text in ("# digits-export", ARCH, "test accuracy", "12,345 images processed", "evolution", "dds",
                 "`model.ts`", "torch.jit.load", "max abs diff"):
        assert text in card, text


def test_default_target_formats_and_errors(run_dir, tmp_path):
    report = export_run(run_dir, formats="architecture,card")
    assert report["folder"] == str(run_dir / "export") and set(report["files"]) == {
        "architecture.yaml", "architecture.json", "MODEL_CARD.md", "export.json"}
    runner = CliRunner()
    outcome = runner.invoke(cli, ["export", str(run_dir), "--format", "tflite", "--to", str(tmp_path / "x")])
    assert outcome.exit_code == 2 and "unknown export format 'tflite'; allowed:" in outcome.output
    outcome = runner.invoke(cli, ["export", str(tmp_path)])
    assert outcome.exit_code == 2 and "holds no summary.json" in outcome.output
    moved = tmp_path / "moved"
    shutil.copytree(run_dir, moved, ignore=shutil.ignore_patterns("dataset", "export"))
    summary = json.loads((moved / "summary.json").read_text())
    summary["dataset"]["path"] = str(tmp_path / "gone")  # the dataset was moved away
    (moved / "summary.json").write_text(json.dumps(summary))
    outcome = runner.invoke(cli, ["export", str(moved), "--format", "architecture"])
    assert outcome.exit_code == 2 and "pass --dataset DIR" in outcome.output
    outcome = runner.invoke(cli, ["export", str(moved), "--format", "architecture", "--dataset",
                                  str(run_dir / "dataset")])
    assert outcome.exit_code == 0, outcome.output


def test_onnx_without_the_optional_packages_says_how_to_get_them(run_dir, tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnxruntime" else real(name, *a))
    outcome = CliRunner().invoke(cli, ["export", str(run_dir), "--format", "onnx", "--to", str(tmp_path / "o")])
    assert outcome.exit_code == 2
    assert "needs the optional packages onnx, onnxscript, onnxruntime (onnxruntime missing)" in outcome.output
    assert "pip install 'frugalnas[onnx]'" in outcome.output
    outcome = CliRunner().invoke(cli, ["export", str(run_dir), "--to", str(tmp_path / "d")])
    assert outcome.exit_code == 0 and "ONNX is left out" in outcome.output
    assert not (tmp_path / "d" / "model.onnx").exists() and (tmp_path / "d" / "model.ts").exists()


def test_registered_model_carries_the_files_and_the_summary_tags(run_dir, tmp_path):
    """What `frugalnas run` registers: the model in MLflow's pickle-free pt2 format, the export files
    beside it, the summary as version tags; `frugalnas export models:/...` takes them back out."""
    import mlflow

    from frugalnas.export import load_run, write_bundle
    from frugalnas.track.experiment import summary_tags
    from frugalnas.track.location import resolve_location
    from frugalnas.track.runs import ExperimentTracker

    context = load_run(run_dir)
    bundle = write_bundle(context, tmp_path / "bundle", ["torchscript", "architecture", "card"])
    tracker = ExperimentTracker.start(resolve_location(None, tmp_path), "digits-export", tmp_path, run_name="r",
                                      tags={}, params={}, resume=False)
    summary = json.loads((run_dir / "summary.json").read_text())
    version = tracker.log_model(context.model, registered_name="digits-export", input_example=context.inputs,
                                extra_files=[tmp_path / "bundle" / f for f in bundle["files"]],
                                version_tags=summary_tags({**summary, "export": bundle}))
    assert version == "1"
    uri = tracker.location.uri
    client = mlflow.MlflowClient(uri)
    tags = client.get_model_version("digits-export", "1").tags
    assert tags["frugalnas.best_arch"] == ARCH and tags["frugalnas.strategy"] == "evolution"
    assert float(tags["frugalnas.final_test_accuracy"]) == summary["final_test_accuracy"]
    assert tags["frugalnas.model_serialization"] == "pt2" and tags["frugalnas.export_formats"] == (
        "torchscript,architecture,card")

    # safe loading: pickle deserialization off, the pt2 archive is accepted and reproduces the model
    os.environ["MLFLOW_ALLOW_PICKLE_DESERIALIZATION"] = "false"
    mlflow.set_tracking_uri(uri)
    try:
        loaded = mlflow.pytorch.load_model("models:/digits-export/1")
    finally:
        mlflow.set_tracking_uri(None)
        del os.environ["MLFLOW_ALLOW_PICKLE_DESERIALIZATION"]
    with torch.no_grad():
        assert torch.allclose(loaded(context.inputs), context.outputs, atol=ATOL, rtol=RTOL)

    to = tmp_path / "from-registry"
    outcome = CliRunner().invoke(cli, ["export", "models:/digits-export/1", "--to", str(to), "--tracking-uri", uri,
                                       "--json"])
    assert outcome.exit_code == 0, outcome.output
    report = json.loads(outcome.stdout.strip().splitlines()[-1])
    assert report["formats"]["torchscript"]["check"]["top1_agreement"] == 1.0
    assert (to / "model.ts").read_bytes() == (tmp_path / "bundle" / "model.ts").read_bytes()
    assert {"architecture.yaml", "MODEL_CARD.md", "check_batch.npz"} <= {p.name for p in to.iterdir()}
    outcome = CliRunner().invoke(cli, ["export", "models:/digits-export/1", "--to", str(to), "--tracking-uri", uri,
                                       "--format", "onnx"])
    assert outcome.exit_code == 2 and "carries the formats torchscript, architecture, card; not onnx" in outcome.output
    outcome = CliRunner().invoke(cli, ["export", "models:/nope/3", "--to", str(to), "--tracking-uri", uri])
    assert outcome.exit_code == 2 and "cannot fetch models:/nope/3" in outcome.output


def test_detection_run_exports_its_ultralytics_files(tmp_path, monkeypatch):
    """A detection run as the detection search leaves it (OUT/best.yaml, OUT/best.pt saved the way
    ultralytics saves, final_test_map50_95 in the summary); the model here is built from ultralytics'
    bundled yolov8n.yaml, nothing is downloaded."""
    config_dir = tmp_path / "yolo-config"
    config_dir.mkdir()
    monkeypatch.setenv("YOLO_CONFIG_DIR", str(config_dir))
    monkeypatch.setenv("YOLO_OFFLINE", "1")
    monkeypatch.setenv("YOLO_AUTOINSTALL", "false")
    from ultralytics import YOLO

    out = tmp_path / "det"
    ingest("shapes:40", out / "dataset", task="detection", seed=0)
    model = YOLO("yolov8n.yaml")
    model.save(str(out / "best.pt"))
    (out / "best.yaml").write_text(yaml.safe_dump(dict(model.model.yaml)))
    summary = {"experiment": "det", "strategy": "random", "selection": "full", "space": "yolo",
               "space_settings": {"family": "yolo"}, "best_arch": "yolov8n-like", "final_test_map50_95": 0.123,
               "final_test_map50": 0.2, "final_params": 3157200, "search_images_processed": 10,
               "search_wall_seconds": 1.0, "total_wall_seconds": 2.0, "dataset": {"path": str(out / "dataset")}}
    (out / "summary.json").write_text(json.dumps(summary))
    outcome = CliRunner().invoke(cli, ["export", str(out), "--json"])
    assert outcome.exit_code == 0, outcome.output
    report = json.loads(outcome.stdout.strip().splitlines()[-1])
    assert set(report["files"]) == {"best.yaml", "best.pt", "architecture.yaml", "architecture.json", "MODEL_CARD.md",
                                    "export.json"}
    assert (out / "export" / "best.pt").read_bytes() == (out / "best.pt").read_bytes()
    reloaded = YOLO(str(out / "export" / "best.pt"))
    assert sum(p.numel() for p in reloaded.model.parameters()) == sum(p.numel() for p in model.model.parameters())
    doc = yaml.safe_load((out / "export" / "architecture.yaml").read_text())
    assert doc["task"] == "detection" and doc["test_map50_95"] == 0.123 and doc["arch"] == "yolov8n-like"
    assert "test mAP50-95: 0.1230" in (out / "export" / "MODEL_CARD.md").read_text()
    outcome = CliRunner().invoke(cli, ["export", str(out), "--format", "torchscript", "--to", str(tmp_path / "t")])
    assert outcome.exit_code == 2 and "YOLO('best.pt').export(format='onnx')" in outcome.output
