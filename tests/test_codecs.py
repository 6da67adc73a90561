"""Codec round trips: determinism, odd sizes, grey images, payload bits per pixel, PSNR monotone in
quality; recoding a stored dataset."""
import struct

import numpy as np
import pytest

from frugalnas.data import CODECS, ingest, make_codec, open_dataset, psnr, ssim
from frugalnas.data.recode import recode
from frugalnas.data.sources import make_source
from frugalnas.data.video_codecs import nal_units
from frugalnas.errors import DataError

LOSSY = ["jpeg", "webp", "avif", "h264", "h265"]
# well-separated ladders on each codec's own scale, least compressed first
LADDERS = {"jpeg": [90, 60, 30, 10], "webp": [90, 60, 30, 5], "avif": [90, 60, 30, 5],
           "h264": [10, 25, 38, 50], "h265": [10, 25, 38, 50]}


@pytest.fixture(scope="module")
def colour_images():
    """Eight generated 32x32 RGB images (shapes on noise)."""
    source = make_source("shapes:8", seed=3)
    return [record.load() for record in source.records()]


@pytest.fixture(scope="module")
def grey_images():
    from sklearn.datasets import load_digits

    return list(np.rint(load_digits().images[:8] * 255 / 16).astype(np.uint8)[..., None])


def test_every_codec_is_registered():
    assert set(LOSSY) | {"png", "raw"} == set(CODECS.names())


@pytest.mark.parametrize("name", LOSSY)
def test_deterministic_and_independent_of_earlier_images(name, colour_images):
    """The same image gives the same bytes, whatever was encoded before (a fresh encoder per image)."""
    codec = make_codec(name, LADDERS[name][1])
    first = codec.encode(colour_images[0])
    for other in colour_images[1:4]:
        codec.encode(other)
    assert codec.encode(colour_images[0]) == first
    assert make_codec(name, LADDERS[name][1]).encode(colour_images[0]) == first


@pytest.mark.parametrize("name", LOSSY + ["png", "raw"])
@pytest.mark.parametrize("shape", [(7, 9, 3), (7, 9, 1), (1, 1, 3), (33, 32, 1)])
def test_odd_and_tiny_sizes_round_trip_to_their_shape(name, shape):
    pixels = np.random.default_rng(0).integers(0, 256, size=shape, dtype=np.uint8)
    codec = make_codec(name)
    decoded = codec.decode(codec.encode(pixels), *shape)
    assert decoded.shape == shape and decoded.dtype == np.uint8
    if not codec.lossy:
        assert np.array_equal(decoded, pixels)


def test_grey_images_are_coded_as_grey(grey_images):
    for name in LOSSY:
        assert make_codec(name).pixel_format(1) in ("gray", "yuv420p")  # webp has no grey mode
    assert make_codec("h264").pixel_format(1) == "gray" and make_codec("h264").pixel_format(3) == "yuv420p"
    # x264 at CRF 0 is lossless on the luma plane, so grey images come back exactly
    codec = make_codec("h264", 0)
    for image in grey_images:
        assert np.array_equal(codec.decode(codec.encode(image), 8, 8, 1), image)
    # colour: 4:2:0 and the colour conversion cap it (around 41 dB), but it is close
    assert psnr(grey_images[0], make_codec("jpeg", 95).decode(make_codec("jpeg", 95).encode(grey_images[0]), 8, 8, 1)) > 30


@pytest.mark.parametrize("name", LOSSY)
def test_psnr_and_ssim_rise_and_payload_grows_with_quality(name, colour_images):
    psnrs, ssims, payloads = [], [], []
    for quality in LADDERS[name]:
        codec = make_codec(name, quality)
        encoded = [codec.encode(image) for image in colour_images]
        decoded = [codec.decode(data, 32, 32, 3) for data in encoded]
        psnrs.append(np.mean([psnr(a, b) for a, b in zip(colour_images, decoded)]))
        ssims.append(np.mean([ssim(a, b) for a, b in zip(colour_images, decoded)]))
        payloads.append(np.mean([codec.payload_bytes(data) for data in encoded]))
        assert all(0 < codec.payload_bytes(data) < len(data) for data in encoded)  # headers are excluded
    assert all(a > b for a, b in zip(psnrs, psnrs[1:])), psnrs  # least compressed first
    assert all(a > b for a, b in zip(ssims, ssims[1:])), ssims
    assert all(a > b for a, b in zip(payloads, payloads[1:])), payloads


def test_payload_counts_exactly_the_image_data(colour_images):
    # JPEG: everything after the start-of-scan header up to the end-of-image marker
    data = make_codec("jpeg", 50).encode(colour_images[0])
    sos = data.index(b"\xff\xda")
    header = struct.unpack(">H", data[sos + 2 : sos + 4])[0]
    assert make_codec("jpeg", 50).payload_bytes(data) == len(data) - (sos + 2 + header) - 2
    # H.264: the slice NAL units; parameter sets and 4-byte start codes are the rest
    codec = make_codec("h264", 23)
    data = codec.encode(colour_images[0])
    units = nal_units(data)
    types = [data[start] & 0x1F for start, _ in units]
    assert types == [7, 8, 5]  # SPS, PPS, IDR slice: x264's SEI text is dropped
    assert codec.payload_bytes(data) == units[2][1] - units[2][0]
    assert codec.payload_bytes(data) + (units[0][1] - units[0][0]) + (units[1][1] - units[1][0]) + 12 == len(data)
    # PNG: the IDAT chunks; raw: every byte
    assert make_codec("png").payload_bytes(make_codec("png").encode(colour_images[0])) > 0
    assert make_codec("raw").payload_bytes(make_codec("raw").encode(colour_images[0])) == 32 * 32 * 3


def test_quality_out_of_range_and_unknown_codec_name_what_is_allowed():
    with pytest.raises(DataError, match=r"quality 52 is out of range for codec 'h264': allowed CRF 0..51 \(lower is better"):
        make_codec("h264", 52)
    with pytest.raises(DataError, match=r"allowed quality 1..100 \(higher is better"):
        make_codec("jpeg", 0)
    with pytest.raises(KeyError, match="unknown codec 'h266'; allowed: avif, h264, h265, jpeg, png, raw, webp"):
        make_codec("h266")


def test_corrupt_video_bytes_are_a_data_error():
    with pytest.raises(DataError, match="corrupt h264 image"):
        make_codec("h264").decode(b"\x00\x00\x00\x01garbage", 8, 8, 1)


def test_ssim_of_identical_and_noisy_images(colour_images):
    image = colour_images[0]
    assert ssim(image, image) == pytest.approx(1.0)
    noisy = np.clip(image.astype(int) + np.random.default_rng(0).normal(0, 25, image.shape), 0, 255).astype(np.uint8)
    assert 0 < ssim(image, noisy) < 0.9


def test_card_records_codec_versions_pixel_format_and_bits_per_pixel(tmp_path):
    card = ingest("digits", tmp_path / "d", codec="h264", quality=30)
    assert card["pixel_format"] == "gray" and card["quality_scale"] == "CRF"
    assert {"pyav", "libavcodec", "libx264"} <= set(card["codec_versions"])
    assert card["codec_versions"]["libx264"].startswith("x264 - core")
    stats = card["split_stats"]
    assert set(stats) == set(card["splits"])
    for split, entry in stats.items():
        assert entry["images"] == card["splits"][split] and entry["pixels"] == 64 * entry["images"]
        assert entry["payload_bpp"] < entry["stored_bpp"] == pytest.approx(8 * entry["stored_bytes"] / entry["pixels"], abs=1e-3)
        assert 20 < entry["mean_psnr"] < 60 and 0.5 < entry["mean_ssim"] <= 1
    assert sum(s["stored_bytes"] for s in stats.values()) == card["stored_bytes"]
    # SSIM on a fixed sample of about one image in eight
    assert sum(s["ssim_images"] for s in stats.values()) == card["ssim_images"]
    assert 1797 / 16 < card["ssim_images"] < 1797 / 4
    assert "libjpeg-turbo" in ingest("digits", tmp_path / "j", codec="jpeg")["codec_versions"]


def test_recode_keeps_ids_splits_labels_and_measures_against_its_source(tmp_path):
    ingest("digits", tmp_path / "ref", codec="png")
    reference = open_dataset(tmp_path / "ref")
    card = recode(tmp_path / "ref", tmp_path / "h264", codec="h264", quality=40)
    recoded = open_dataset(tmp_path / "h264")
    assert card["splits"] == reference.card["splits"] and card["class_counts"] == reference.card["class_counts"]
    assert card["recoded_from"]["path"] == str(reference.root) and card["recoded_from"]["codec"] == "png"
    for split in reference.split_names():
        ref_ids, ref_images, ref_labels = reference.arrays(split)
        ids, images, labels = recoded.arrays(split)
        assert np.array_equal(ids, ref_ids) and np.array_equal(labels, ref_labels)
        assert reference.table(split, ["source"]).equals(recoded.table(split, ["source"]))
        measured = np.mean([psnr(a, b) for a, b in zip(ref_images, images)])
        assert card["split_stats"][split]["mean_psnr"] == pytest.approx(measured, abs=1e-3)
    only_test = recode(tmp_path / "ref", tmp_path / "jpeg", codec="jpeg", quality=10, splits=["test"])
    assert list(only_test["splits"]) == ["test"]
    assert only_test["split_stats"]["test"]["mean_psnr"] < card["split_stats"]["test"]["mean_psnr"] + 20


def test_recode_refuses_bad_requests(tmp_path):
    ingest("shapes:12", tmp_path / "ref", codec="png")
    with pytest.raises(DataError, match="is the dataset being recoded"):
        recode(tmp_path / "ref", tmp_path / "ref", codec="jpeg", overwrite=True)
    with pytest.raises(DataError, match=r"has no split\(s\) \['holdout'\]"):
        recode(tmp_path / "ref", tmp_path / "x", codec="jpeg", splits=["holdout"])
    with pytest.raises(DataError, match="out of range"):
        recode(tmp_path / "ref", tmp_path / "x", codec="avif", quality=101)
    recode(tmp_path / "ref", tmp_path / "x", codec="avif", quality=50)
    with pytest.raises(DataError, match="exists and is not empty"):
        recode(tmp_path / "ref", tmp_path / "x", codec="avif", quality=50)
    boxes = open_dataset(tmp_path / "x").table("train", ["boxes"])["boxes"].to_pylist()
    assert boxes == open_dataset(tmp_path / "ref").table("train", ["boxes"])["boxes"].to_pylist()


def test_pool_splits_carves_train_val_test_from_a_test_only_source(tmp_path):
    from sources_on_disk import write_mnist

    write_mnist(tmp_path / "m", n_test=60)
    for path in (tmp_path / "m").glob("train-*"):
        path.unlink()  # a test split only, like ../shared/data/mnist
    assert list(ingest(f"mnist:{tmp_path / 'm'}", tmp_path / "plain", codec="png")["splits"]) == ["test"]
    card = ingest(f"mnist:{tmp_path / 'm'}", tmp_path / "out", codec="png", pool_splits=True)
    assert set(card["splits"]) == {"train", "val", "test"} and card["pool_splits"] is True
    assert sum(card["splits"].values()) == 60 and card["splits"]["test"] == 12
