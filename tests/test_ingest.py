import json

import numpy as np
import pytest
from PIL import Image

from frugalnas.data import ingest, open_dataset
from frugalnas.errors import DataError
from sources_on_disk import write_cifar10, write_cifar100, write_folder, write_mnist, write_yolo


def stored_by_source(path):
    """{source reference: (decoded pixels, label)} of every split."""
    dataset = open_dataset(path)
    out = {}
    for split in dataset.split_names():
        table = dataset.table(split, ["source"])
        ids, images, labels = dataset.arrays(split)
        for src, pixels, label in zip(table["source"].to_pylist(), images, labels):
            out[src] = (pixels, int(label))
    return out


CARD_KEYS = {"name", "task", "classes", "splits", "class_counts", "codec", "quality", "image_size", "stored_bytes",
             "mean_psnr", "skipped"}


def test_digits_card_and_lossless_round_trip(tmp_path):
    from sklearn.datasets import load_digits

    card = ingest("digits", tmp_path / "d", codec="png")
    assert CARD_KEYS <= set(card)
    assert json.loads((tmp_path / "d" / "dataset.json").read_text()) == card
    assert sum(card["splits"].values()) == 1797
    assert set(card["splits"]) == {"train", "val", "test"}
    assert card["classes"] == [str(i) for i in range(10)]
    assert card["mean_psnr"] == 100.0 and card["quality"] is None
    assert sum(sum(c.values()) for c in card["class_counts"].values()) == 1797
    digits = load_digits()
    expected = np.rint(digits.images * 255 / 16).astype(np.uint8)
    for src, (pixels, label) in stored_by_source(tmp_path / "d").items():
        index = int(src.split("#")[1])
        assert label == digits.target[index]
        np.testing.assert_array_equal(pixels[:, :, 0], expected[index])


@pytest.mark.parametrize("codec,quality,min_psnr", [("jpeg", 95, 30), ("webp", 90, 30), ("jpeg", 10, 15)])
def test_lossy_round_trip_within_codec_loss(tmp_path, codec, quality, min_psnr):
    images = write_cifar10(tmp_path / "c10")
    card = ingest(f"cifar:{tmp_path / 'c10'}", tmp_path / "out", codec=codec, quality=quality)
    assert card["codec"] == codec and card["quality"] == quality
    assert card["mean_psnr"] >= min_psnr
    stored = stored_by_source(tmp_path / "out")
    for filename, (source_images, labels) in images.items():
        for index, (pixels, label) in enumerate(zip(source_images, labels)):
            got, got_label = stored[f"{tmp_path / 'c10' / filename}#{index}"]
            assert got_label == label
            mse = np.mean((got.astype(float) - pixels.astype(float)) ** 2)
            assert 10 * np.log10(255**2 / max(mse, 1e-9)) >= min_psnr - 3


def test_ids_are_stable_unique_and_independent_of_codec(tmp_path):
    a = ingest("digits", tmp_path / "a", codec="jpeg")
    b = ingest("digits", tmp_path / "b", codec="raw")
    ids_a = {s: open_dataset(tmp_path / "a").labels(s)[0].tolist() for s in a["splits"]}
    ids_b = {s: open_dataset(tmp_path / "b").labels(s)[0].tolist() for s in b["splits"]}
    assert ids_a == ids_b
    every = sum(ids_a.values(), [])
    assert len(every) == len(set(every)) == 1797
    c = ingest("digits", tmp_path / "c", codec="jpeg", seed=1)
    ids_c = {s: open_dataset(tmp_path / "c").labels(s)[0].tolist() for s in c["splits"]}
    assert ids_c != ids_a  # another seed carves other splits, but from the same id space
    assert sorted(sum(ids_c.values(), [])) == sorted(every)


def test_raw_is_exact_and_resize(tmp_path):
    card = ingest("shapes:30", tmp_path / "s", codec="raw", image_size=16)
    assert card["image_size"] == 16 and card["mean_psnr"] == 100.0
    ids, images, labels = open_dataset(tmp_path / "s").arrays("train")
    assert images.shape[1:] == (16, 16, 3)
    bigger = open_dataset(tmp_path / "s").arrays("train", image_size=24)[1]
    assert bigger.shape[1:] == (24, 24, 3)


def test_arrays_by_id_in_given_order_and_unknown_id(tmp_path, digits_dataset):
    dataset = open_dataset(digits_dataset)
    ids, _ = dataset.labels("train")
    wanted = ids[[5, 0, 3]]
    got_ids, images, labels = dataset.arrays("train", ids=wanted)
    assert got_ids.tolist() == wanted.tolist()
    with pytest.raises(DataError, match="999999"):
        dataset.arrays("train", ids=[999999])
    with pytest.raises(DataError, match="no split 'bogus'"):
        dataset.table("bogus")


def test_shapes_carry_labels_and_boxes(tmp_path):
    card = ingest("shapes:40", tmp_path / "s", seed=3)
    assert card["task"] == "classification"
    table = open_dataset(tmp_path / "s").table("train")
    for label, boxes in zip(table["label"].to_pylist(), table["boxes"].to_pylist()):
        assert 1 <= len(boxes) <= 3
        assert label == max(boxes, key=lambda b: b["w"] * b["h"])["cls"]
    det = ingest("shapes:40", tmp_path / "det", seed=3, task="detection")
    assert det["task"] == "detection"
    assert sum(det["class_counts"]["train"].values()) == sum(len(b) for b in open_dataset(tmp_path / "det").table("train")["boxes"].to_pylist())
    same = ingest("shapes:40", tmp_path / "again", seed=3)
    assert open_dataset(tmp_path / "again").table("train")["image"].to_pylist() == table["image"].to_pylist()


def test_cifar_bad_labels_and_count_mismatch_are_skipped_and_listed(tmp_path, capsys):
    write_cifar10(tmp_path / "c", bad_labels=True, mismatch=True)
    card = ingest(f"cifar:{tmp_path / 'c'}", tmp_path / "out")
    reasons = [s["reason"] for s in card["skipped"]]
    assert any("label out of range: 42" in r for r in reasons)
    assert sum("image without label" in r for r in reasons) == 2
    assert sum(card["splits"].values()) == 30 - 3
    with pytest.raises(DataError, match=r"data_batch_1#3: label out of range: 42"):
        ingest(f"cifar:{tmp_path / 'c'}", tmp_path / "strict", strict=True)
    assert not (tmp_path / "strict").exists()


def test_cifar100(tmp_path):
    write_cifar100(tmp_path / "c100")
    card = ingest(f"cifar:{tmp_path / 'c100'}", tmp_path / "out", val_fraction=0)
    assert len(card["classes"]) == 100 and card["classes"][99] == "fine99"
    assert card["splits"] == {"train": 12, "test": 12}


@pytest.mark.parametrize("gz", [True, False])
def test_mnist_idx(tmp_path, gz):
    written = write_mnist(tmp_path / "m", gz=gz)
    card = ingest(f"mnist:{tmp_path / 'm'}", tmp_path / "out", codec="png", val_fraction=0)
    assert card["splits"] == {"train": 15, "test": 6}
    stored = stored_by_source(tmp_path / "out")
    images, labels = written["train"]
    suffix = ".gz" if gz else ""
    for index in range(15):
        pixels, label = stored[f"train-images-idx3-ubyte{suffix}#{index}"]
        np.testing.assert_array_equal(pixels[:, :, 0], images[index])
        assert label == labels[index]


def test_mnist_only_train_files_and_broken_files(tmp_path):
    write_mnist(tmp_path / "m", bad_label=True, extra_labels=3, truncate_images=True)
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        (tmp_path / "m" / name).unlink()
    card = ingest(f"mnist:{tmp_path / 'm'}", tmp_path / "out")
    reasons = [s["reason"] for s in card["skipped"]]
    assert sum("label out of range: 12" in r for r in reasons) == 1
    # 15 declared images with 2 truncated, 18 labels: 5 labels have no image
    assert sum("label without image" in r for r in reasons) == 5
    assert sum(card["splits"].values()) == 15 - 2 - 1
    assert "test" in card["splits"]  # carved from train, as the t10k files are absent


def test_folder_with_splits_corrupt_and_stray_files(tmp_path):
    root = write_folder(tmp_path / "f")
    (root / "train" / "cat" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    good = root / "train" / "dog" / "000.png"
    (root / "train" / "dog" / "truncated.png").write_bytes(good.read_bytes()[:60])
    (root / "train" / "owl" / "notes.txt").write_text("hello")
    (root / "train" / "README").write_text("stray")
    card = ingest(f"folder:{root}", tmp_path / "out", val_fraction=0)
    assert card["classes"] == ["cat", "dog", "owl"]
    assert card["splits"] == {"train": 12, "test": 12}
    by_file = {s["source"].split("/")[-1]: s["reason"] for s in card["skipped"]}
    assert by_file["broken.jpg"].startswith("unreadable image")
    assert by_file["truncated.png"].startswith("unreadable image")
    assert by_file["notes.txt"].startswith("not an image file")
    assert by_file["README"] == "file outside a class sub-folder"
    with pytest.raises(DataError, match="README: file outside a class sub-folder"):
        ingest(f"folder:{root}", tmp_path / "strict", strict=True)


def test_folder_without_splits_and_mixed_sizes(tmp_path):
    root = write_folder(tmp_path / "f", splits=(None,), per_class=5)
    Image.fromarray(np.zeros((20, 12, 3), np.uint8)).save(root / "cat" / "odd.png")
    card = ingest(f"folder:{root}", tmp_path / "native", val_fraction=0, test_fraction=0)
    assert card["image_size"] is None and [20, 12] in card["image_sizes"]
    with pytest.raises(DataError, match="differ in size"):
        open_dataset(tmp_path / "native").arrays("train")
    card = ingest(f"folder:{root}", tmp_path / "sized", image_size=8)
    assert card["image_size"] == 8
    assert sum(card["splits"].values()) == 16


def test_yolo_boxes_and_every_kind_of_bad_label(tmp_path):
    root = write_yolo(tmp_path / "y")
    labels = root / "labels" / "train"
    (labels / "im1.txt").write_text("0 0.9 0.5 0.4 0.2\n")  # extends past the right edge
    (labels / "im2.txt").write_text("7 0.5 0.5 0.1 0.1\n")  # class out of range
    (labels / "im3.txt").unlink()  # image without its label file: a background image, as in ultralytics
    (labels / "ghost.txt").write_text("0 0.5 0.5 0.1 0.1\n")  # label without an image
    (labels / "im4.txt").write_text("")  # a background image: allowed
    card = ingest(f"yolo:{root}", tmp_path / "out", val_fraction=0, test_fraction=0)
    assert card["task"] == "detection" and card["classes"] == ["box", "ring"]
    reasons = sorted(s["reason"].split(":")[0] for s in card["skipped"])
    assert len(reasons) == 3
    assert any("box outside the image" in s["reason"] and "im1.txt" in s["source"] for s in card["skipped"])
    assert any("label out of range" in s["reason"] and "im2.txt" in s["source"] for s in card["skipped"])
    assert any(s["reason"] == "label file without an image" for s in card["skipped"])
    table = open_dataset(tmp_path / "out").table("train")
    assert table.num_rows == 4  # im0, im3 and im4 (background), im5
    boxes = dict(zip(table["source"].to_pylist(), table["boxes"].to_pylist()))
    labels = dict(zip(table["source"].to_pylist(), table["label"].to_pylist()))
    for background in ("im3.png", "im4.png"):
        assert boxes[str(root / "images" / "train" / background)] == []
        assert labels[str(root / "images" / "train" / background)] == -1
    assert card["background_images"] == {"train": 2}
    assert [b["cls"] for b in boxes[str(root / "images" / "train" / "im0.png")]] == [0, 0]
    assert card["class_counts"]["train"] == {"box": 3, "ring": 1}  # im0: box, box; im5: ring, box


def test_yolo_split_without_its_label_folder_is_an_error(tmp_path):
    root = write_yolo(tmp_path / "y")
    (root / "images" / "val").mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(root / "images" / "val" / "a.png")
    with pytest.raises(DataError, match="no labels/val/ folder"):
        ingest(f"yolo:{root}", tmp_path / "out")


def test_background_images_survive_carving_and_classification_cards_have_none(tmp_path):
    root = write_yolo(tmp_path / "y", n=20)
    for i in range(0, 20, 2):
        (root / "labels" / "train" / f"im{i}.txt").unlink()
    card = ingest(f"yolo:{root}", tmp_path / "out", val_fraction=0.2, test_fraction=0.2)
    assert sum(card["background_images"].values()) == 10
    assert all(card["background_images"][s] >= 1 for s in ("train", "val", "test"))  # stratified as label -1
    assert ingest("shapes:10", tmp_path / "cls")["background_images"] is None


def test_unknown_source_codec_missing_path_and_bad_quality(tmp_path):
    with pytest.raises(Exception, match="allowed: cifar, digits, folder, mnist, shapes, voc, yolo"):
        ingest("imagenet", tmp_path / "x")
    with pytest.raises(Exception, match="allowed: avif, h264, h265, jpeg, png, raw, webp"):
        ingest("digits", tmp_path / "x", codec="gif")
    with pytest.raises(DataError, match="not found"):
        ingest(f"folder:{tmp_path / 'missing'}", tmp_path / "x")
    with pytest.raises(DataError, match="allowed quality 1..100"):
        ingest("digits", tmp_path / "x", quality=0)
    with pytest.raises(DataError, match="quality 52 is out of range for codec 'h264': allowed CRF 0..51"):
        ingest("digits", tmp_path / "x", codec="h264", quality=52)
    with pytest.raises(DataError, match="no bounding boxes"):
        ingest("digits", tmp_path / "x", task="detection")


def test_refuses_to_overwrite_without_flag(tmp_path):
    ingest("shapes:10", tmp_path / "s", test_fraction=0, val_fraction=0)
    with pytest.raises(DataError, match="--overwrite"):
        ingest("shapes:10", tmp_path / "s")
    card = ingest("shapes:12", tmp_path / "s", overwrite=True, test_fraction=0, val_fraction=0)
    assert card["splits"] == {"train": 12}
