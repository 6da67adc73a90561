"""The attention autoencoder (detection data) and the label-set measures of the embed report."""
import json
from itertools import combinations

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from frugalnas.cli import cli
from frugalnas.config import parse_config
from frugalnas.data import ingest
from frugalnas.embed import AttentionAutoencoder, box_masks, embed_dataset, encode, train_autoencoder
from frugalnas.embed.attention import gate_grid
from frugalnas.embed.latents import default_image_size
from frugalnas.embed.quality import (
    furthest_label_jaccard, jaccard, knn_label_jaccard, label_set_matrix, random_label_jaccard)
from frugalnas.errors import ConfigError, DataError


@pytest.fixture(autouse=True)
def one_thread():
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def shapes_detection(tmp_path_factory):
    """600 generated shapes images, ingested for detection (lossless, 32x32)."""
    out = tmp_path_factory.mktemp("shapes") / "dataset"
    ingest("shapes:600", out, task="detection", codec="png")
    return out


# --- masks and the model --------------------------------------------------------------------

def test_box_masks_are_the_covered_fraction_of_each_cell():
    # a box over the left half, top quarter of a 4x4 grid: cells (0, 0) and (0, 1) fully covered
    masks = box_masks([[(0, 0.25, 0.125, 0.5, 0.25)], [], [{"cls": 1, "cx": 0.5, "cy": 0.5, "w": 0.125, "h": 0.25}]], 4)
    assert masks.shape == (3, 1, 4, 4) and masks.dtype == np.float32
    expected = np.zeros((4, 4), np.float32)
    expected[0, :2] = 1
    np.testing.assert_array_equal(masks[0, 0], expected)
    assert masks[1].sum() == 0  # a background image
    # half a cell wide and one cell tall, centred on a grid corner: an eighth of each of four cells
    np.testing.assert_allclose(masks[2, 0][1:3, 1:3], 0.125)
    assert masks[2, 0].sum() == pytest.approx(0.5)


@pytest.mark.parametrize("image_size,grid", [(8, 4), (16, 4), (32, 8), (64, 16), (128, 16), (256, 16)])
def test_gate_grid_and_shapes(image_size, grid):
    assert gate_grid(image_size) == grid
    model = AttentionAutoencoder(3, image_size, 7)
    x = torch.rand(2, 3, image_size, image_size)
    features, gate = model.attention(x)
    assert gate.shape == (2, 1, grid, grid) and features.shape[-1] == grid
    assert model.encode(x).shape == (2, 7) and model(x)[0].shape == x.shape
    terms = model.objective(x, torch.zeros(2, dtype=torch.long), torch.zeros(2, 1, grid, grid))
    assert set(terms) == {"loss", "recon_loss", "triplet_loss", "attention_loss"}


def test_the_latent_sees_only_what_the_gate_lets_through():
    model = AttentionAutoencoder(3, 32, 8).eval()
    a, b = torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32)
    assert not torch.allclose(model.encode(a), model.encode(b))
    with torch.no_grad():
        model.gate[-1].bias.fill_(-1e4)  # a closed gate: nothing of the image reaches the latent
    torch.testing.assert_close(model.encode(a), model.encode(b))


def test_needs_boxes_and_a_detection_dataset(tmp_path):
    images = np.zeros((4, 16, 16, 3), np.uint8)
    with pytest.raises(ValueError, match="needs boxes"):
        train_autoencoder(images, np.zeros(4, int), kind="attention", epochs=1, image_size=16)
    with pytest.raises(ValueError, match="masks"):
        AttentionAutoencoder(3, 16, 4).objective(torch.rand(2, 3, 16, 16), torch.zeros(2))
    ingest("shapes:20", tmp_path / "cls")
    with pytest.raises(DataError, match="needs a detection data set"):
        embed_dataset(tmp_path / "cls", kind="attention", epochs=0, image_size=8)
    result = CliRunner().invoke(cli, ["embed", str(tmp_path / "cls"), "--kind", "attention"])
    assert result.exit_code == 2 and "needs a detection data set" in result.output


def test_trained_gate_follows_the_boxes(shapes_detection):
    """On shapes the gate learns where the shapes are: its IoU with the box masks rises well above
    the untrained gate's (measured after 20 epochs, seeds 0-3: 0.72-0.75; untrained 0.0-0.17)."""
    trained = embed_dataset(shapes_detection, kind="attention", latent_dim=16, epochs=20, image_size=32)
    untrained = embed_dataset(shapes_detection, kind="attention", latent_dim=16, epochs=0, image_size=32)
    assert trained["attention_iou"] >= 0.6
    assert trained["attention_iou"] >= untrained["attention_iou"] + 0.3
    first, last = trained["history"][0], trained["history"][-1]
    assert last["attention_loss"] < 0.8 * first["attention_loss"]
    assert trained["attention_weight"] == 1.0


# --- the label-set measures -------------------------------------------------------------------

def test_label_set_measures_against_brute_force():
    rng = np.random.default_rng(0)
    sets = rng.random((30, 4)) < 0.4
    sets[:3] = False  # some background images: two empty sets agree (1)
    vectors = rng.normal(size=(30, 5))
    assert jaccard(np.array([True, True, False]), np.array([True, False, True])) == pytest.approx(1 / 3)
    assert jaccard(np.zeros(3, bool), np.zeros(3, bool)) == 1.0

    def j(a, b):
        union = (sets[a] | sets[b]).sum()
        return 1.0 if union == 0 else (sets[a] & sets[b]).sum() / union

    dist = ((vectors[:, None] - vectors[None]) ** 2).sum(-1)
    np.fill_diagonal(dist, np.inf)
    nearest = np.argsort(dist, axis=1)[:, :3]
    assert knn_label_jaccard(vectors, sets, 3) == pytest.approx(np.mean([[j(i, n) for n in row] for i, row in enumerate(nearest)]))
    np.fill_diagonal(dist, -np.inf)
    assert furthest_label_jaccard(vectors, sets) == pytest.approx(np.mean([j(i, dist[i].argmax()) for i in range(30)]))
    groups = np.arange(30) % 3
    expected = []
    for i in range(30):
        same = [r for r in range(30) if groups[r] == groups[i] and r != i]
        expected.append(j(i, max(same, key=lambda r: dist[i, r])))
    assert furthest_label_jaccard(vectors, sets, groups) == pytest.approx(np.mean(expected))
    assert furthest_label_jaccard(vectors[:2], sets[:2], np.array([0, 1])) is None  # nobody has a partner
    assert random_label_jaccard(sets) == pytest.approx(np.mean([j(a, b) for a, b in combinations(range(30), 2)]))
    assert label_set_matrix([[(2, .5, .5, .1, .1), {"cls": 0}], []], 3).tolist() == [[True, False, True], [False] * 3]


def test_detection_report_for_every_kind(shapes_detection):
    reports = {kind: embed_dataset(shapes_detection, kind=kind, latent_dim=8, epochs=2, image_size=16)
               for kind in ("plain", "attention")}
    for kind, report in reports.items():
        for key in ("label_jaccard", "pixel_label_jaccard"):
            assert set(report[key]) == {"5", "10"} and all(0 <= v <= 1 for v in report[key].values())
        for key in ("random_label_jaccard", "furthest_label_jaccard", "pixel_furthest_label_jaccard",
                    "furthest_same_class_label_jaccard"):
            assert 0 <= report[key] <= 1
        assert ("attention_iou" in report) == (kind == "attention")
    # raw pixels and random pairs do not depend on the autoencoder
    assert reports["plain"]["pixel_label_jaccard"] == reports["attention"]["pixel_label_jaccard"]
    assert reports["plain"]["random_label_jaccard"] == reports["attention"]["random_label_jaccard"]


def test_cli_embed_attention_prints_the_measures(shapes_detection):
    result = CliRunner().invoke(cli, ["embed", str(shapes_detection), "--kind", "attention", "--epochs", "1",
                                      "--latent-dim", "4", "--json"])
    assert result.exit_code == 0, result.output
    assert "(latent 4, 32px)" in result.stderr  # the default input size: the stored 32 px
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["kind"] == "attention" and "furthest_label_jaccard" in report and "history" not in report


def test_default_image_size():
    assert default_image_size({"task": "classification", "image_size": 8}) == 8
    assert default_image_size({"task": "classification", "image_size": 100}) == 64
    assert default_image_size({"task": "classification", "image_size": None, "image_sizes": [[480, 640]]}) == 32
    assert default_image_size({"task": "detection", "image_size": None, "image_sizes": [[480, 640]]}) == 256
    assert default_image_size({"task": "detection", "image_size": 100}) == 128


def test_config_allows_attention_only_for_detection_data():
    parse_config({"name": "a", "dataset": {"source": "voc:/data/voc"}, "embedding": {"kind": "attention"},
                 "space": "yolo"})
    parse_config({"name": "a", "dataset": {"source": "shapes", "task": "detection"}, "embedding": {"kind": "attention"},
                 "space": "yolo"})
    with pytest.raises(ConfigError, match="embedding.kind: 'attention' .* needs a detection data set"):
        parse_config({"name": "a", "dataset": {"source": "digits"}, "embedding": {"kind": "attention"}})
    with pytest.raises(ConfigError, match="embedding.kind"):
        parse_config({"name": "a", "embedding": {"kind": "vae"}})
