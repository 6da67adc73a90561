import json
import shutil

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from frugalnas.cli import cli
from frugalnas.data import open_dataset
from frugalnas.data.torch_dataset import ImageSplit
from frugalnas.errors import ConfigError
from frugalnas.selection import make_selector
from frugalnas.train import TrainSettings, build_arch, evaluate, train_with_selector
from frugalnas.train.fixed import train_fixed


@pytest.fixture
def digits(tmp_path, digits_dataset):
    """A private copy: embeddings get written next to the dataset."""
    torch.set_num_threads(1)
    return shutil.copytree(digits_dataset, tmp_path / "digits")


def test_baseline_cnn_learns_digits_with_random_subset(digits):
    report = train_fixed(digits, "baseline:cnn", selector="random", subset_size=200,
                         settings=TrainSettings(epochs=8, batch_size=32, seed=0))
    assert report["images_processed"] == 8 * 200
    assert report["subset_updates"] == 0 and report["trained_epochs"] == 8
    assert report["test_accuracy"] > 0.7  # chance is 0.1; measured ~0.9
    assert report["eval_split"] == "test"


def test_dds_updates_subset_and_counts_only_trained_images(digits):
    report = train_fixed(digits, "baseline:cnn", selector="dds", subset_size=100, warmup_epochs=2, mastery=0.5,
                         embedding={"kind": "triplet", "latent_dim": 8, "epochs": 2, "image_size": 8},
                         settings=TrainSettings(epochs=10, batch_size=32, seed=0))
    history = report["history"]
    assert report["subset_updates"] >= 1
    assert report["subset_updates"] == sum(h["updated"] for h in history)
    assert report["trained_epochs"] == 10 - report["subset_updates"]
    assert report["images_processed"] == sum(h["images"] for h in history if h["trained"]) == 100 * report["trained_epochs"]
    assert report["embedding"]["latent_dim"] == 8
    assert len(list((digits / "embeddings").glob("triplet-d8-*.parquet"))) == 1
    assert report["test_accuracy"] > 0.3


def test_same_seed_same_result(digits):
    run = lambda: train_fixed(digits, "baseline:cnn", selector="random", subset_size=60,
                              settings=TrainSettings(epochs=3, seed=4))
    a, b = run(), run()
    assert a["test_accuracy"] == b["test_accuracy"]
    assert [h["train_loss"] for h in a["history"]] == [h["train_loss"] for h in b["history"]]


def test_accuracy_is_measured_on_the_test_split_not_the_subset(digits):
    dataset = open_dataset(digits)
    train_data, test_data = ImageSplit(dataset, "train"), ImageSplit(dataset, "test")
    assert not set(train_data.ids) & set(test_data.ids)
    model, _ = build_arch("baseline:cnn", 10, 1)
    selector = make_selector("random", train_data.ids, train_data.labels, subset_size=50, seed=0)
    train_with_selector(model, train_data, selector, TrainSettings(epochs=15, batch_size=25))
    subset_accuracy = evaluate(model, ImageSplit(dataset, "train", ids=selector.subset))
    assert subset_accuracy > evaluate(model, test_data)  # 50 memorised images vs held-out ones


def test_bad_arch_and_unknown_baseline(digits):
    with pytest.raises(ConfigError, match="expected SPACE:ARCH"):
        train_fixed(digits, "cnn", settings=TrainSettings(epochs=1))
    with pytest.raises(Exception, match="allowed: cnn"):
        train_fixed(digits, "baseline:resnet9000", settings=TrainSettings(epochs=1))


def test_cli_train_json_and_errors(digits, tmp_path):
    runner = CliRunner()
    result = runner.invoke(cli, ["train", str(digits), "--selector", "full", "--epochs", "1", "--json",
                                 "--out", str(tmp_path / "r.json")])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    for key in ("test_accuracy", "images_processed", "subset_updates", "epochs", "wall_seconds"):
        assert key in summary
    assert summary["images_processed"] == open_dataset(digits).card["splits"]["train"]
    assert "history" in json.loads((tmp_path / "r.json").read_text())
    assert "epoch 1/1" in result.stderr
    bad = runner.invoke(cli, ["train", str(digits), "--selector", "random", "--subset-size", "5", "--epochs", "1"])
    assert bad.exit_code == 2 and "subset_size" in bad.stderr


def test_cli_embed_json(digits):
    result = CliRunner().invoke(cli, ["embed", str(digits), "--kind", "plain", "--latent-dim", "4", "--epochs", "1",
                                      "--image-size", "8", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout.strip().splitlines()[-1])
    for key in ("kind", "latent_dim", "knn_agreement", "pixel_knn_agreement", "path"):
        assert key in report
    assert set(report["knn_agreement"]) == {"5", "10"}
    assert "epoch 1/1" in result.stderr


def test_selector_trainer_resumes_identically(digits):
    from frugalnas.train import SelectorTrainer

    dataset = open_dataset(digits)
    train_data = ImageSplit(dataset, "train")

    def fresh():
        torch.manual_seed(0)
        model, _ = build_arch("baseline:cnn", 10, 1)
        # easy_quantile: the easiest fifth is swapped at every update (a no-op update would train instead)
        selector = make_selector("dynamic-random", train_data.ids, train_data.labels, subset_size=60, seed=1,
                                 warmup_epochs=1, mastery=0.3, easy_quantile=0.8)
        return SelectorTrainer(model, train_data, selector, TrainSettings(epochs=6, batch_size=20))

    straight = fresh()
    while not straight.done:
        straight.run_epoch()
    first = fresh()
    for _ in range(3):
        first.run_epoch()
    state = first.state_dict()
    resumed = fresh()
    resumed.load_state_dict(state)
    while not resumed.done:
        resumed.run_epoch()
    assert straight.selector.subset_updates >= 1
    assert straight.selector.history == resumed.selector.history
    for a, b in zip(straight.model.state_dict().values(), resumed.model.state_dict().values()):
        torch.testing.assert_close(a, b)
