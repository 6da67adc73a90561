"""The compression study: recovery statistics, config validation, and a small study end to end."""
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from frugalnas.cli import cli
from frugalnas.compression.jobs import resolve_model
from frugalnas.compression.levels import Level, study_levels
from frugalnas.compression.stats import PairedBootstrap, recovery_estimate
from frugalnas.config import CompressionConfig
from frugalnas.errors import ConfigError


JOB = str(Path(__file__).resolve().parent.parent / "jobs" / "compression_digits.yaml")


def run(*args):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


# ---------------------------------------------------------------- statistics


def _correct(accuracy: float, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.random(n) < accuracy).astype(np.float32)[None]


def test_recovery_is_the_share_of_the_drop_closed():
    n = 4000
    rng = np.random.default_rng(0)
    hard = rng.random(n) < 0.3  # images the compression breaks
    original_ref = np.ones((1, n))
    original_level = (~hard).astype(float)[None]
    retrained = original_level.copy()
    retrained[0, np.flatnonzero(hard)[: hard.sum() // 2]] = 1  # half of the broken images fixed
    boot = PairedBootstrap(n, 500, seed=1)
    parts = [boot.accuracy(c, g, 0.95) for c, g in ((original_ref, "ref"), (original_level, "ref"), (retrained, "re"))]
    estimate = recovery_estimate(*parts, confidence=0.95)
    assert estimate["recovery"] == pytest.approx(0.5, abs=1 / hard.sum())
    low, high = estimate["recovery_ci"]
    assert low < estimate["recovery"] < high and high - low < 0.2
    assert estimate["drop_points"] == pytest.approx(100 * hard.mean())
    assert not estimate["within_noise"]


def test_recovery_is_na_when_the_drop_is_within_noise():
    n = 300
    same = _correct(0.9, n, 1)
    nearly = same.copy()
    nearly[0, :2] = 1 - nearly[0, :2]  # two images differ: no real drop
    boot = PairedBootstrap(n, 500, seed=2)
    parts = [boot.accuracy(same, "a", 0.95), boot.accuracy(nearly, "a", 0.95), boot.accuracy(_correct(0.95, n, 3), "b", 0.95)]
    estimate = recovery_estimate(*parts, confidence=0.95)
    assert estimate["within_noise"] and estimate["recovery"] is None and estimate["recovery_ci"] is None
    assert "n/a" in estimate["note"]


def test_paired_bootstrap_interval_covers_and_resamples_models():
    boot = PairedBootstrap(1000, 400, seed=0)
    two_models = np.concatenate([_correct(0.8, 1000, 4), _correct(0.6, 1000, 5)])
    result = boot.accuracy(two_models, "g", 0.9)
    low, high = result["accuracy_ci"]
    assert low < result["accuracy"] < high
    assert high - low > 0.1  # the two models disagree by 20 points: model resampling widens the interval
    assert len(result["per_model"]) == 2
    one_model = boot.accuracy(two_models[:1], "h", 0.9)
    assert one_model["accuracy_ci"][1] - one_model["accuracy_ci"][0] < 0.06


def test_levels_are_ordered_least_compressed_first():
    settings = CompressionConfig(levels={"jpeg": [10, 90, 50], "h264": [40, 18]}, recovery={"h264": [40]},
                                 two_stage={"jpeg": [5]})
    parts = study_levels(settings)
    assert [level.name for level in parts["all"]] == ["jpeg-q90", "jpeg-q50", "jpeg-q10", "jpeg-q5",
                                                      "h264-crf18", "h264-crf40"]
    assert parts["recovery"] == [Level("h264", 40)] and Level("h264", 40).label == "CRF 40"


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize("override,fragment", [
    ("compression.levels={jpeg: [10], gif: [3]}", "unknown codec 'gif'; allowed: avif, h264, h265, jpeg, png, raw, webp"),
    ("compression.levels={h264: [40, 60]}", "quality 60 is out of range for codec 'h264': allowed CRF 0..51"),
    ("compression.levels={jpeg: [0]}", "quality 0 is out of range for codec 'jpeg': allowed quality 1..100"),
    ("compression.levels={}", "key 'compression.levels' has value {}: no levels"),
    ("compression.levels={jpeg: []}", "codec 'jpeg' has an empty list of levels"),
    ("compression.recovery={h264: []}", "key 'compression.recovery'"),
    ("compression.levels={png: [1]}", "codec 'png' is lossless"),
    ("compression.repeats=0", "compression.repeats"),
])
def test_bad_study_config_exits_2_naming_it_before_any_work(tmp_path, override, fragment):
    result = run("compression", JOB, "--set", override, "--out", str(tmp_path / "out"))
    assert result.exit_code == 2
    assert fragment in result.stderr
    assert not (tmp_path / "out").exists()


def test_model_spec_errors_name_the_culprit(tmp_path):
    with pytest.raises(ConfigError, match="expected SPACE:ARCH"):
        resolve_model("cnn")
    with pytest.raises(KeyError, match="unknown baseline architecture 'vgg'"):
        resolve_model("baseline:vgg")
    with pytest.raises(ConfigError, match="holds no finished run"):
        resolve_model(f"run:{tmp_path}")
    # run:PATH: the best architecture of a finished run, in that run's space settings
    from frugalnas.config import parse_config

    run_config = parse_config({"name": "r", "space": {"name": "nb201", "network": {"channels": 4, "stages": 2}}})
    (tmp_path / "config.json").write_text(json.dumps(run_config.model_dump()))
    best = "|skip_connect~0|+|none~0|nor_conv_1x1~1|+|none~0|none~1|avg_pool_3x3~2|"
    (tmp_path / "summary.json").write_text(json.dumps({"best_arch": best}))
    from_run = resolve_model(f"run:{tmp_path}")
    assert from_run.arch == best and from_run.space["network"]["channels"] == 4 and str(tmp_path) in from_run.label
    assert sum(p.numel() for p in from_run.build(10, 3).parameters()) > 0
    spec = resolve_model("nb201:|nor_conv_3x3~0|+|none~0|none~1|+|none~0|none~1|none~2|",
                         ("nb201", {"network": {"channels": 8, "cells_per_stage": 1, "stages": 3}}))
    assert spec.space["network"]["channels"] == 8
    assert sum(p.numel() for p in spec.build(10, 1).parameters()) > 0


# ---------------------------------------------------------------- end to end


SMALL_STUDY = [
    "--set", "compression.levels={jpeg: [50, 10], h264: [45]}",
    "--set", "compression.recovery={jpeg: [10]}",
    "--set", "compression.two_stage={h264: [45]}",
    "--set", "compression.repeats=1", "--set", "compression.bootstrap=200",
    "--set", "final.epochs=3", "--set", "search.budget=2", "--set", "search.epochs_per_candidate=1",
]


@pytest.mark.slow
def test_small_study_end_to_end_and_resume(tmp_path, ray_session):
    out = tmp_path / "study"
    result = run("compression", JOB, *SMALL_STUDY, "--out", str(out), "--json")
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary == json.loads((out / "summary.json").read_text())

    reference = summary["reference"]
    assert reference["codec"] == "png" and reference["quality"] is None and 0.6 < reference["accuracy"] <= 1
    levels = {(r["codec"], r["quality"]): r for r in summary["levels"]}
    assert set(levels) == {("jpeg", 50), ("jpeg", 10), ("h264", 45)}
    for record in levels.values():
        assert {"codec", "quality", "bpp", "psnr", "accuracy", "accuracy_ci"} <= set(record)
        assert record["accuracy_ci"][0] <= record["accuracy"] <= record["accuracy_ci"][1]
        assert 0 < record["bpp"] < reference["bpp"]
    assert levels[("jpeg", 50)]["psnr"] > levels[("jpeg", 10)]["psnr"]
    assert levels[("jpeg", 50)]["bpp"] > levels[("jpeg", 10)]["bpp"]

    (recovery,) = summary["recovery"]
    assert {"codec", "quality", "original_accuracy", "compressed_accuracy", "retrained_accuracy", "recovery",
            "recovery_ci", "retrained_on_reference_accuracy"} <= set(recovery)
    assert recovery["compressed_accuracy"] == levels[("jpeg", 10)]["accuracy"]
    assert (recovery["recovery"] is None) == recovery["within_noise"]

    cells = summary["two_stage"]
    assert len(cells) == 4
    assert {(c["search_data"], c["retrain_data"]) for c in cells} == {
        (s, r) for s in ("reference", "compressed") for r in ("reference", "compressed")}
    for cell in cells:
        assert {"arch", "accuracy_on_reference", "accuracy_on_level", "search_wall_seconds"} <= set(cell)
    (architectures,) = summary["two_stage_architectures"]
    assert architectures["same"] == (architectures["searched_on_reference"] == architectures["searched_on_level"])

    assert {"ingest", "recode", "degradation", "recovery", "two_stage_search", "two_stage_retrain"} <= set(summary["phases"])
    assert summary["codec_versions"]["h264"]["libx264"].startswith("x264")
    for plot in ("accuracy_vs_bpp", "accuracy_vs_level", "psnr_vs_bpp", "recovery", "two_stage", "examples"):
        assert (out / "plots" / f"{plot}.png").stat().st_size > 1000
    # the same images at every level
    from frugalnas.data import open_dataset

    ids = [open_dataset(out / "levels" / name).labels("test")[0] for name in ("jpeg-q50", "jpeg-q10", "h264-crf45")]
    assert all(np.array_equal(np.sort(ids[0]), np.sort(other)) for other in ids[1:])
    assert set(open_dataset(out / "levels" / "jpeg-q10").card["splits"]) == {"train", "val", "test"}
    assert list(open_dataset(out / "levels" / "jpeg-q50").card["splits"]) == ["test"]

    # MLflow: the study run, a nested run per model and per search
    import mlflow

    client = mlflow.MlflowClient(summary["tracking"]["uri"])
    parent = client.get_run(summary["tracking"]["run_id"])
    assert parent.info.status == "FINISHED" and parent.data.tags["kind"] == "compression"
    assert parent.data.metrics["reference_accuracy"] == pytest.approx(reference["accuracy"])
    children = client.search_runs([parent.info.experiment_id],
                                  filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    roles = sorted(run.data.tags["frugalnas.role"] for run in children)
    assert roles == ["model"] * 6 + ["search"] * 2

    # a second run without --resume refuses; with --resume everything is reused
    again = run("compression", JOB, *SMALL_STUDY, "--out", str(out))
    assert again.exit_code == 2 and "--resume" in again.stderr
    resumed = run("compression", JOB, *SMALL_STUDY, "--out", str(out), "--resume", "--json")
    assert resumed.exit_code == 0, resumed.stderr
    assert "training" not in resumed.stderr and "searching" not in resumed.stderr
    second = json.loads(resumed.stdout.strip().splitlines()[-1])
    assert second["levels"] == summary["levels"] and second["recovery"] == summary["recovery"]
    # the phases' cost survives the resume: the first run's training time is still counted
    assert second["phases"]["degradation"] >= summary["phases"]["degradation"] > 0
    assert second["phases_this_run"]["degradation"] < summary["phases"]["degradation"]


# ---------------------------------------------------------------- detection


def _detection_stats(seed: int, images: int = 30) -> dict:
    """Matched predictions of a made-up detector: 1-3 boxes per image of 3 classes, predictions that
    find most of them at varied IoU thresholds, plus false alarms."""
    rng = np.random.default_rng(seed)
    parts = {k: [] for k in ("tp", "conf", "pred_cls", "pred_image", "target_cls", "target_image")}
    for image in range(images):
        classes = rng.integers(0, 3, size=rng.integers(1, 4))
        parts["target_cls"].append(classes)
        parts["target_image"].append(np.full(len(classes), image))
        found = classes[rng.random(len(classes)) < 0.7]
        alarms = rng.integers(0, 3, size=rng.integers(0, 3))
        cls = np.concatenate([found, alarms])
        depth = np.concatenate([rng.integers(1, 11, size=len(found)), np.zeros(len(alarms), int)])
        parts["tp"].append(np.arange(10)[None, :] < depth[:, None])  # right at the first `depth` thresholds
        parts["conf"].append(np.concatenate([rng.uniform(0.4, 1, len(found)), rng.uniform(0, 0.6, len(alarms))]))
        parts["pred_cls"].append(cls)
        parts["pred_image"].append(np.full(len(cls), image))
    return {k: np.concatenate(v) for k, v in parts.items()}


def test_detection_map_counts_each_resampled_image_as_often_as_drawn():
    from ultralytics.utils.metrics import ap_per_class

    from frugalnas.compression.detection import mean_ap

    stats = _detection_stats(0)
    full = mean_ap(stats)
    ap = ap_per_class(stats["tp"], stats["conf"], stats["pred_cls"], stats["target_cls"])[5]
    assert full == pytest.approx((ap.mean(), ap[:, 0].mean()))
    assert 0.1 < full[0] < full[1] < 1
    assert mean_ap(stats, np.full(30, 3)) == pytest.approx(full)  # every image three times: the same curves
    keep = np.zeros(30, int)
    keep[:10] = 1  # the first ten images only
    subset = {k: v[stats[("pred_image" if k in ("tp", "conf", "pred_cls") else "target_image")] < 10]
              for k, v in stats.items() if k not in ("pred_image", "target_image")}
    subset["pred_image"] = stats["pred_image"][stats["pred_image"] < 10]
    subset["target_image"] = stats["target_image"][stats["target_image"] < 10]
    assert mean_ap(stats, keep) == pytest.approx(mean_ap(subset))
    boot = PairedBootstrap(30, 200, seed=0)
    replicates = np.array([mean_ap(stats, counts)[0] for counts in boot.counts])
    record = boot.summarise(np.array([full[0]]), boot.combine(replicates[None], "d"), 0.95)
    assert record["accuracy_ci"][0] < full[0] < record["accuracy_ci"][1]


def test_detection_study_needs_a_detector(tmp_path):
    result = run("compression", str(Path(JOB).with_name("compression_detect_shapes.yaml")), "--set",
                 "compression.model=baseline:cnn", "--set", "dataset.source=shapes:40", "--out", str(tmp_path / "o"))
    assert result.exit_code == 2
    assert "not a detector" in result.stderr and "yolo:ARCH" in result.stderr


@pytest.mark.slow
def test_small_detection_study_end_to_end(tmp_path, ray_session):
    out = tmp_path / "study"
    result = run("compression", str(Path(JOB).with_name("compression_detect_shapes.yaml")),
                 "--set", "dataset.source=shapes:120", "--set", "compression.levels={jpeg: [10]}",
                 "--set", "compression.recovery={jpeg: [10]}", "--set", "compression.bootstrap=100",
                 "--set", "final.epochs=2", "--out", str(out), "--json")
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["task"] == "detection" and summary["metric"] == "map50_95"
    (level,) = summary["levels"]
    assert level["codec"] == "jpeg" and 0 <= level["accuracy"] <= 1 and "map50" in level
    assert level["accuracy_ci"][0] <= level["accuracy"] <= level["accuracy_ci"][1]
    (recovery,) = summary["recovery"]
    assert {"original_accuracy", "compressed_accuracy", "retrained_accuracy", "recovery"} <= set(recovery)
    # the study's mAP is ultralytics' own, recomputed from the kept per-image statistics
    from frugalnas.data import open_dataset
    from frugalnas.data.yolo_export import export_yolo
    from frugalnas.train.detect import DetectionSettings, evaluate_detector

    settings = DetectionSettings(epochs=2, batch_size=16, image_size=64)
    ultralytics_map = evaluate_detector(out / "models" / "reference-s0" / "model.pt",
                                        export_yolo(open_dataset(out / "dataset")), "test", settings, tmp_path / "val")
    assert summary["reference"]["accuracy"] == pytest.approx(ultralytics_map["map50_95"], abs=1e-6)
    assert summary["reference"]["map50"] == pytest.approx(ultralytics_map["map50"], abs=1e-6)
    assert (out / "plots" / "accuracy_vs_bpp.png").exists()
