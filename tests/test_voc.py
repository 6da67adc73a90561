"""The Pascal VOC source: small VOC folders written by the tests, and the real BCCD set when present."""
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from frugalnas.cli import cli
from frugalnas.data import ingest, open_dataset
from frugalnas.errors import DataError
from sources_on_disk import voc_xml, write_voc

BCCD = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "bccd" / "BCCD"


def rows(path):
    """{image file name: (split, label, boxes)} of a stored dataset."""
    ds = open_dataset(path)
    out = {}
    for split in ds.split_names():
        table = ds.table(split, ["source", "label", "boxes"])
        for source, label, boxes in zip(*(table[c].to_pylist() for c in ("source", "label", "boxes"))):
            out[Path(source).name] = (split, label, boxes)
    return out


def test_splits_classes_and_normalised_boxes(tmp_path):
    write_voc(tmp_path / "voc")
    card = ingest(f"voc:{tmp_path / 'voc'}", tmp_path / "out", codec="png")
    assert card["task"] == "detection" and card["classes"] == ["cat", "dog"]
    assert card["splits"] == {"train": 5, "val": 2, "test": 1} and card["skipped"] == []
    assert card["background_images"] == {"train": 0, "val": 0, "test": 0}
    assert card["class_counts"]["train"] == {"cat": 5, "dog": 2}
    stored = rows(tmp_path / "out")
    split, label, boxes = stored["im_001.jpg"]
    assert split == "train" and label == 1  # the larger box is the dog's
    # cat (1, 2)-(11, 12) and dog (10, 5)-(40, 30) in a 40x30 image, as YOLO centre/size fractions
    expected = [(0, 6 / 40, 7 / 30, 10 / 40, 10 / 30), (1, 25 / 40, 17.5 / 30, 30 / 40, 25 / 30)]
    got = [(b["cls"], b["cx"], b["cy"], b["w"], b["h"]) for b in boxes]
    np.testing.assert_allclose(got, expected, atol=1e-6)
    assert stored["im_000.jpg"][1] == 0 and stored["im_007.jpg"][0] == "test"
    # the stored pixels are the JPEG's, lossless (png) from there
    ds = open_dataset(tmp_path / "out")
    _, images, _ = ds.arrays("test")
    original = np.asarray(Image.open(tmp_path / "voc" / "JPEGImages" / "im_007.jpg").convert("RGB"))
    np.testing.assert_array_equal(images[0], original)


def test_without_split_lists_everything_is_train_and_carved(tmp_path):
    write_voc(tmp_path / "voc", n=10, splits=None)
    card = ingest(f"voc:{tmp_path / 'voc'}", tmp_path / "out", val_fraction=0.2, test_fraction=0.2)
    assert sum(card["splits"].values()) == 10 and set(card["splits"]) == {"train", "val", "test"}
    assert card["val_fraction"] == 0.2


def test_trainval_list_stands_for_train(tmp_path):
    write_voc(tmp_path / "voc", splits=(("trainval", 6), ("test", 2)))
    card = ingest(f"voc:{tmp_path / 'voc'}", tmp_path / "out", val_fraction=0.5)
    assert card["splits"] == {"train": 3, "val": 3, "test": 2}


def test_every_kind_of_bad_record_is_named(tmp_path, capsys):
    root = tmp_path / "voc"
    write_voc(root, n=8, splits=(("train", 8),))
    ann, jpg = root / "Annotations", root / "JPEGImages"
    (ann / "im_000.xml").write_text(voc_xml("im_000.jpg", (40, 30), [("cat", 5, 5, 5, 20)]))    # zero width
    (ann / "im_001.xml").write_text(voc_xml("im_001.jpg", (40, 30), [("cat", 1, 1, 10, 10), ("dog", 20, 10, 60, 20)]))
    (ann / "im_002.xml").unlink()                                                              # image, no annotation
    (jpg / "im_003.jpg").unlink()                                                              # annotation, no image
    (ann / "im_004.xml").write_text("<annotation><object>")                                    # unreadable XML
    (ann / "im_005.xml").write_text(voc_xml("im_005.jpg", (64, 48), [("cat", 1, 1, 10, 10)]))  # size disagrees
    (ann / "im_006.xml").write_text(voc_xml("im_006.jpg", (40, 30), []))                       # background: kept
    lists = root / "ImageSets" / "Main"
    (lists / "train.txt").write_text((lists / "train.txt").read_text() + "ghost\n")             # listed, no files
    (lists / "test.txt").write_text("im_007\n")                                                # listed in two splits
    card = ingest(f"voc:{root}", tmp_path / "out", val_fraction=0)
    reasons = {Path(s["source"].split("#")[0]).name + ("#" + s["source"].split("#")[1] if "#" in s["source"] else ""):
               s["reason"] for s in card["skipped"]}
    assert reasons["im_000.xml"].startswith("degenerate box") and "object 1 (cat)" in reasons["im_000.xml"]
    assert reasons["im_001.xml"].startswith("box outside the image") and "object 2 (dog)" in reasons["im_001.xml"]
    assert reasons["im_002.jpg"].startswith("image without an annotation")
    assert reasons["im_003.xml"].startswith("annotation without an image")
    assert reasons["im_004.xml"].startswith("unreadable annotation")
    assert reasons["im_005.xml"].startswith("annotation size differs from the image")
    assert reasons["train.txt#ghost"].startswith("listed stem without files")
    assert reasons["test.txt#im_007"].startswith("stem listed twice")
    assert len(card["skipped"]) == 8
    assert card["splits"] == {"train": 2}  # im_006 (background) and im_007
    assert card["background_images"] == {"train": 1}
    assert rows(tmp_path / "out")["im_006.jpg"][1:] == (-1, [])

    result = CliRunner().invoke(cli, ["ingest", f"voc:{root}", "--out", str(tmp_path / "strict"), "--strict"])
    assert result.exit_code == 2
    assert "im_000.xml: degenerate box" in result.output and "--strict" in result.output


def test_fixed_class_list_sets_order_and_rejects_other_names(tmp_path):
    root = tmp_path / "voc"
    write_voc(root, n=4, splits=(("train", 4),))
    card = ingest(f"voc:{root}", tmp_path / "a", classes=["dog", "cat"], val_fraction=0, test_fraction=0)
    assert card["classes"] == ["dog", "cat"] and card["class_counts"]["train"] == {"dog": 2, "cat": 4}
    assert rows(tmp_path / "a")["im_000.jpg"][2][0]["cls"] == 1
    card = ingest(f"voc:{root}", tmp_path / "b", classes=["cat"], val_fraction=0, test_fraction=0)
    assert card["splits"] == {"train": 2}
    assert all(s["reason"].startswith("unknown class: object 2 (dog), allowed: cat") for s in card["skipped"])

    result = CliRunner().invoke(cli, ["ingest", f"voc:{root}", "--out", str(tmp_path / "c"), "--classes", "dog, cat",
                                      "--json", "--test-fraction", "0", "--val-fraction", "0"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output.strip().splitlines()[-1])["classes"] == ["dog", "cat"]
    with pytest.raises(DataError, match="applies to: voc"):
        ingest("shapes:4", tmp_path / "d", classes=["circle"])
    with pytest.raises(DataError, match="unique names"):
        ingest(f"voc:{root}", tmp_path / "e", classes=["cat", "cat"])


def test_layout_errors_name_what_is_missing(tmp_path):
    write_voc(tmp_path / "outer" / "VOC2007")
    with pytest.raises(DataError, match=r"no Annotations/ folder .* it is in .*VOC2007: pass that folder"):
        ingest(f"voc:{tmp_path / 'outer'}", tmp_path / "out")
    (tmp_path / "nojpg" / "Annotations").mkdir(parents=True)
    with pytest.raises(DataError, match="no JPEGImages/ folder"):
        ingest(f"voc:{tmp_path / 'nojpg'}", tmp_path / "out")
    with pytest.raises(DataError, match="voc:PATH"):
        ingest("voc", tmp_path / "out")


def test_experiment_config_takes_the_class_list(tmp_path):
    from frugalnas.config import parse_config
    from frugalnas.runtime.experiment import prepare_dataset

    write_voc(tmp_path / "voc")
    config = parse_config({"name": "v", "dataset": {"source": f"voc:{tmp_path / 'voc'}", "classes": ["dog", "cat"]},
                           "space": "yolo"})
    folder = prepare_dataset(config, tmp_path / "run", log=lambda message: None)
    assert open_dataset(folder).classes == ["dog", "cat"]


@pytest.mark.slow
@pytest.mark.skipif(not BCCD.is_dir(), reason="needs the shared BCCD copy in ../shared/data/bccd")
def test_bccd(tmp_path):
    """The real BCCD set: its split lists, three classes, and its two zero-size boxes named and skipped."""
    card = ingest(f"voc:{BCCD}", tmp_path / "bccd", image_size=64)
    assert card["classes"] == ["Platelets", "RBC", "WBC"]
    assert card["splits"] == {"train": 204, "val": 86, "test": 72}  # 205 / 87 / 72 listed
    assert sorted(Path(s["source"]).name for s in card["skipped"]) == ["BloodImage_00338.xml", "BloodImage_00343.xml"]
    assert all(s["reason"].startswith("degenerate box") for s in card["skipped"])
    total = {c: sum(card["class_counts"][s][c] for s in card["splits"]) for c in card["classes"]}
    assert total == {"Platelets": 359, "RBC": 4133, "WBC": 370}
    ds = open_dataset(tmp_path / "bccd")
    boxes = ds.table("train", ["boxes"])["boxes"].to_pylist()
    flat = np.array([[b["cx"], b["cy"], b["w"], b["h"]] for image in boxes for b in image])
    assert (flat > 0).all() and (flat[:, :2] < 1).all() and (flat[:, 2:] <= 1).all()
