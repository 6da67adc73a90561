"""Detection: the yolo space, YOLO export of stored data, per-image hardness, detection config checks.

Fast tests (no training); training and the end-to-end search are in test_detection_run.py.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml

from frugalnas.config import parse_config
from frugalnas.errors import ConfigError, DataError
from frugalnas.selection import make_selector
from frugalnas.spaces import YoloArch, YoloStage, load_space
from frugalnas.strategies import STRATEGIES, make_strategy

torch.set_num_threads(1)
EXAMPLE = "w0.25-conv3.C2fx1-ghost3.C3k2x2-dw5.C3x3-conv5.C3Ghostx1-sppf5"


@pytest.fixture(scope="module")
def space():
    return load_space("yolo")


# ---------------------------------------------------------------------------------- the space


def test_canonical_string_round_trips(space):
    arch = space.parse(EXAMPLE)
    assert str(arch) == EXAMPLE
    assert arch.stages[1] == YoloStage("ghost3", "C3k2", 2) and arch.sppf == 5 and arch.width == 0.25
    assert space.parse("w.25" + EXAMPLE[5:]) == arch  # widths snap to the configured value
    rng = np.random.default_rng(0)
    for _ in range(50):
        sampled = space.sample(rng)
        assert space.parse(str(sampled)) == sampled
        assert space.from_choices(space.to_choices(sampled)) == sampled
        mutated = space.mutate(sampled, rng)
        assert sum(a != b for a, b in zip(space.to_choices(sampled), space.to_choices(mutated))) == 1
        assert space.encode(sampled).sum() == len(space.choices())


def test_space_holds_the_issue_choices(space):
    choices = dict(space.choices())
    assert choices["width"] == [0.125, 0.1875, 0.25, 0.375]
    for stage in ("P2", "P3", "P4", "P5"):
        assert choices[f"{stage}.block"] == ["C2f", "C3k2", "C3", "C3Ghost"]
        assert choices[f"{stage}.repeats"] == [1, 2, 3]
        assert choices[f"{stage}.downsample"] == ["conv3", "conv5", "ghost3", "dw5"]
    assert choices["sppf"] == [3, 5, 7]
    assert space.size() == 4 * (4 * 3 * 4) ** 4 * 3
    assert space.task == "detection"


@pytest.mark.parametrize("text, why", [
    ("w0.25-conv3.C2fx1-sppf5", "parts"),
    ("w0.3-conv3.C2fx1-conv3.C2fx1-conv3.C2fx1-conv3.C2fx1-sppf5", "width 0.3"),
    ("w0.25-conv4.C2fx1-conv3.C2fx1-conv3.C2fx1-conv3.C2fx1-sppf5", "downsample"),
    ("w0.25-conv3.C2fx9-conv3.C2fx1-conv3.C2fx1-conv3.C2fx1-sppf5", "repeats"),
    ("w0.25-conv3.C4x1-conv3.C2fx1-conv3.C2fx1-conv3.C2fx1-sppf5", "stage P2"),
    ("w0.25-conv3.C2fx1-conv3.C2fx1-conv3.C2fx1-conv3.C2fx1-sppf4", "sppf kernel"),
])
def test_bad_strings_say_what_is_wrong(space, text, why):
    with pytest.raises(ValueError, match=why):
        space.parse(text)


def test_space_settings_are_validated():
    with pytest.raises(ConfigError, match="downsamples"):
        load_space("yolo", {"downsamples": ["conv4"]})
    with pytest.raises(ConfigError, match="blocks"):
        load_space("yolo", {"blocks": ["C2f", "Bottleneck"]})
    small = load_space("yolo", {"width_multiples": [0.125], "repeats": [1], "downsamples": ["dw3"]})
    assert small.size() == 4 ** 4 * 3


def test_model_yaml_is_an_ultralytics_model_without_scales(space, tmp_path):
    arch = space.parse(EXAMPLE)
    text = space.model_yaml(arch, 3, names=["a", "b", "c"])
    assert text.startswith(f"# frugalnas yolo architecture {EXAMPLE}")
    model = yaml.safe_load(text)
    assert model == space.model_dict(arch, 3)
    assert model["width_multiple"] == 0.25 and model["depth_multiple"] == 1.0 and "scales" not in model
    assert [row[2] for row in model["backbone"]] == ["Conv", "Conv", "C2f", "GhostConv", "C3k2", "DWConv", "C3",
                                                     "Conv", "C3Ghost", "SPPF"]
    assert model["backbone"][5][3] == [512, 5, 2] and model["backbone"][9][3] == [1024, 5]
    assert model["head"][-1] == [[15, 18, 21], 1, "Detect", ["nc"]]
    path = tmp_path / "cand.yaml"
    path.write_text(text)
    from frugalnas.train.yolo_env import prepare_ultralytics

    prepare_ultralytics()
    from ultralytics import YOLO

    built = YOLO(str(path))  # ultralytics' own loader, as `yolo train model=...` uses it
    assert built.model.yaml["width_multiple"] == 0.25
    assert sum(p.numel() for p in built.model.parameters() if p.requires_grad) == space.count_params(arch, 3, 3)
    out = built.model.eval()(torch.zeros(1, 3, 64, 64))
    assert out[0].shape[:2] == (1, 4 + 3)  # boxes + classes per anchor


def test_fixed_training_refuses_a_detection_space():
    from frugalnas.train.models import build_arch

    with pytest.raises(ConfigError, match="builds detection networks"):
        build_arch(f"yolo:{EXAMPLE}", 10, 3)


def test_params_and_flops_grow_with_width(space):
    narrow = space.parse(EXAMPLE.replace("w0.25", "w0.125"))
    wide = space.parse(EXAMPLE.replace("w0.25", "w0.375"))
    assert space.count_params(narrow, 3, 3) < space.count_params(wide, 3, 3)
    assert 0 < space.count_flops(narrow, 3, 3, 64) < space.count_flops(narrow, 3, 3, 128)


@pytest.mark.parametrize("name", STRATEGIES.names())
def test_every_strategy_searches_the_yolo_space(space, name):
    """ask/tell with a made-up score: every strategy proposes valid, distinct yolo architectures."""
    params = {"population_size": 4, "sample_size": 2} if name == "evolution" else {}
    if name == "predictor":
        params = {"n_initial": 3, "members": 2, "train_steps": 20}
    strategy = make_strategy(name, space, seed=0, objectives=["map50_95"], **params)
    seen = []
    for _ in range(6):
        arch = strategy.ask()
        assert isinstance(arch, YoloArch) and space.parse(str(arch)) == arch
        seen.append(arch)
        strategy.tell(arch, {"map50_95": arch.width + 0.01 * arch.sppf})
    if not strategy.may_repeat:
        assert len(set(seen)) == len(seen)


# ---------------------------------------------------------------------------------- export


@pytest.fixture(scope="module")
def shapes_detection(tmp_path_factory):
    from frugalnas.data import ingest

    out = tmp_path_factory.mktemp("shapes") / "dataset"
    ingest("shapes:40", out, task="detection", image_size=64, codec="png", val_fraction=0.2, test_fraction=0.2)
    return out


def test_export_writes_a_yolo_folder_ultralytics_reads(shapes_detection, tmp_path):
    from frugalnas.data import open_dataset
    from frugalnas.data.yolo_export import YoloExport, export_yolo

    dataset = open_dataset(shapes_detection)
    export = export_yolo(dataset, tmp_path / "yolo")
    data = yaml.safe_load(export.data_yaml.read_text())
    assert data["path"] == str(tmp_path / "yolo") and data["names"] == dict(enumerate(dataset.classes))
    for split, count in dataset.card["splits"].items():
        assert data[split] == str(tmp_path / "yolo" / "images" / split)
        assert len(list((tmp_path / "yolo" / "images" / split).iterdir())) == count
    table = dataset.table("val", ["id", "image", "boxes"])
    for image_id, image, boxes in zip(table["id"].to_numpy(), table["image"].to_pylist(), table["boxes"].to_pylist()):
        assert export.image_file("val", image_id).read_bytes() == image  # the stored PNG, as it is
        lines = (tmp_path / "yolo" / "labels" / "val" / f"{image_id}.txt").read_text().splitlines()
        written = [float(v) for line in lines for v in line.split()]
        assert written == pytest.approx([b[k] for b in boxes for k in ("cls", "cx", "cy", "w", "h")], abs=1e-6)
        assert YoloExport.id_of(export.image_file("val", image_id)) == image_id
    stamp = (tmp_path / "yolo" / "export.json").stat().st_mtime_ns
    assert export_yolo(dataset, tmp_path / "yolo").root == export.root  # reused, not rewritten
    assert (tmp_path / "yolo" / "export.json").stat().st_mtime_ns == stamp

    from frugalnas.train.yolo_env import prepare_ultralytics

    prepare_ultralytics()
    from ultralytics.data.utils import check_det_dataset

    checked = check_det_dataset(str(export.data_yaml))  # ultralytics' own check: no download attempted
    assert checked["nc"] == 4 and checked["names"][0] == "circle"


def test_export_refuses_classification_data_and_unknown_splits(tmp_path, shapes_detection):
    from frugalnas.data import ingest
    from frugalnas.data.yolo_export import export_yolo

    ingest("shapes:20", tmp_path / "cls", codec="png")
    with pytest.raises(DataError, match="classification dataset"):
        export_yolo(tmp_path / "cls")
    with pytest.raises(DataError, match="no split"):
        export_yolo(shapes_detection, tmp_path / "y", splits=["train", "holdout"])


def test_export_command(shapes_detection, tmp_path):
    from click.testing import CliRunner

    from frugalnas.cli import cli

    result = CliRunner().invoke(cli, ["export", str(shapes_detection), "--out", str(tmp_path / "y"), "--split", "train",
                                      "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert list(report["splits"]) == ["train"] and report["data_yaml"] == str(tmp_path / "y" / "data.yaml")


def test_image_lists_are_sorted_and_dominant_classes():
    from frugalnas.data.yolo_export import dominant_classes, write_image_list

    boxes = [
        [{"cls": 1, "cx": .5, "cy": .5, "w": .1, "h": .1}, {"cls": 1, "cx": .2, "cy": .2, "w": .1, "h": .1},
         {"cls": 0, "cx": .5, "cy": .5, "w": .9, "h": .9}],  # most boxes wins over the largest box
        [{"cls": 2, "cx": .5, "cy": .5, "w": .2, "h": .2}, {"cls": 0, "cx": .5, "cy": .5, "w": .1, "h": .1}],  # tie: area
        [],  # background
        None,
    ]
    assert dominant_classes(boxes, 3).tolist() == [1, 2, -1, -1]


def test_write_image_list(tmp_path):
    from frugalnas.data.yolo_export import write_image_list

    path = write_image_list(tmp_path / "l" / "e.txt", ["/d/images/train/9.png", "/d/images/train/10.png"])
    assert path.read_text() == "/d/images/train/10.png\n/d/images/train/9.png\n"


# ---------------------------------------------------------------------------------- hardness


def _box(x, y, s=10.0):
    return [x, y, x + s, y + s]


def test_thesis_hardness_per_box_per_class():
    from frugalnas.train.detect import thesis_hardness

    gt_cls = torch.tensor([0.0, 0.0, 1.0])
    gt = torch.tensor([_box(0, 0), _box(50, 50), _box(100, 100)])
    # box 1 found (0.8), box 2 seen as the wrong class (0.1 x 0.6), class 1 found (0.4)
    pred_cls = torch.tensor([0.0, 1.0, 1.0])
    pred_conf = torch.tensor([0.8, 0.6, 0.4])
    pred = torch.tensor([_box(0, 0), _box(51, 51), _box(100, 100)])
    score, right = thesis_hardness(gt_cls, gt, pred_cls, pred_conf, pred)
    assert score == pytest.approx(((0.8 + 0.06) / 2 + 0.4) / 2)
    assert right  # 2 of 3 boxes found
    # nothing predicted: hardest
    assert thesis_hardness(gt_cls, gt, torch.zeros(0), torch.zeros(0), torch.zeros(0, 4)) == (0.0, False)
    # a miss (no overlap at IoU >= 0.5) counts 0
    far = torch.tensor([_box(300, 300)])
    assert thesis_hardness(gt_cls[:1], gt[:1], torch.tensor([0.0]), torch.tensor([0.9]), far) == (0.0, False)
    # background image: 1 - the most confident false detection
    empty = torch.zeros(0)
    assert thesis_hardness(empty, torch.zeros(0, 4), torch.tensor([2.0]), torch.tensor([0.2]), far) == (
        pytest.approx(0.8), True)
    assert thesis_hardness(empty, torch.zeros(0, 4), torch.tensor([2.0]), torch.tensor([0.3]), far)[1] is False
    # found, but below the confidence a prediction is shown at: scored, not right
    assert thesis_hardness(gt_cls[:1], gt[:1], torch.tensor([0.0]), torch.tensor([0.2]), gt[:1]) == (
        pytest.approx(0.2), False)
    assert thesis_hardness(empty, torch.zeros(0, 4), empty, empty, torch.zeros(0, 4)) == (1.0, True)


def test_selectors_take_a_given_hardness():
    ids, labels = np.arange(20), np.repeat([0, 1], 10)
    selector = make_selector("dynamic-random", ids, labels, subset_size=8, hardness=0.5, mastery=0.5, warmup_epochs=1)
    plan = selector.next_epoch()
    given = np.linspace(0, 1, len(plan.ids))
    selector.observe(plan.ids, given, np.ones(len(plan.ids), bool), hardness=given)
    assert selector.scores() == pytest.approx(dict(zip(plan.ids.tolist(), given.tolist())))
    with pytest.raises(ValueError, match="hardness"):
        selector.observe(plan.ids, given, np.ones(len(plan.ids), bool), hardness=given + 2)
    assert make_selector("dds", ids, labels, subset_size=8, index=_index(ids, labels)).uses_feedback
    assert not make_selector("full", ids, labels).uses_feedback
    assert not make_selector("random", ids, labels, subset_size=8).uses_feedback
    assert not make_selector("stream", ids, labels, subset_size=8).uses_feedback


def _index(ids, labels):
    from frugalnas.selection import ExactFurthest

    return ExactFurthest(ids, np.random.default_rng(0).normal(size=(len(ids), 3)), labels)


# ---------------------------------------------------------------------------------- config


BASE = {"name": "d", "dataset": {"source": "shapes:50", "task": "detection"}, "space": "yolo",
        "selection": {"policy": "random", "subset_size": 10}}


def _config(**changes):
    data = json.loads(json.dumps(BASE))
    for key, value in changes.items():
        section, _, field = key.partition("__")
        data.setdefault(section, {})[field] = value
    return data


def test_detection_config_is_checked_before_any_work():
    config = parse_config(_config(detection__image_size=128, detection__train_args={"mosaic": 0.5}))
    assert config.detection.image_size == 128
    with pytest.raises(ConfigError, match="builds detection networks, but the data set is classification"):
        parse_config({**BASE, "dataset": {"source": "shapes:50"}})
    with pytest.raises(ConfigError, match="builds classification networks"):
        parse_config({**BASE, "space": "nb201"})
    with pytest.raises(ConfigError, match="detection.train_args.lr0"):
        parse_config(_config(final__lr=0.01))
    with pytest.raises(ConfigError, match="not accuracy"):
        parse_config(_config(search__objectives=["accuracy", "-params"]))
    parse_config(_config(search__objectives=["map50_95", "-params"]))
    with pytest.raises(ConfigError, match="epochs: search.epochs_per_candidate"):
        parse_config(_config(detection__train_args={"epochs": 3}))
    with pytest.raises(ConfigError, match="unknown ultralytics argument.*mosiac"):
        parse_config(_config(detection__train_args={"mosiac": 0.5}))
    with pytest.raises(ConfigError, match="unknown key"):
        parse_config(_config(detection__imgsz=128))
    with pytest.raises(ConfigError, match="'entropy' scores images by a classifier"):
        parse_config(_config(selection__policy="entropy"))
    parse_config(_config(selection__policy="stream"))
    with pytest.raises(ConfigError, match="settings for detection runs"):
        parse_config({"name": "c", "detection": {"image_size": 128}})
