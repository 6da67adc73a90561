"""The entropy selector's reference model: trained once per dataset, cached by settings, its cost
reported; and the selector end to end through `frugalnas train`."""
import json
import shutil

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from frugalnas.cli import cli
from frugalnas.data import open_dataset
from frugalnas.selection import load_entropy_scores
from frugalnas.selection.factory import selector_from_settings


@pytest.fixture
def digits(tmp_path, digits_dataset):
    torch.set_num_threads(1)
    return shutil.copytree(digits_dataset, tmp_path / "digits")


def test_reference_scores_are_cached_by_settings_and_report_their_cost(digits, monkeypatch):
    from frugalnas.train import reference

    report = reference.ensure_entropy_scores(digits, epochs=1, batch_size=64)
    n_train = open_dataset(digits).card["splits"]["train"]
    assert report["cached"] is False
    assert report["images_processed"] == n_train and report["train_seconds"] > 0
    assert report["seconds"] >= report["train_seconds"]
    assert 0 <= report["reference_accuracy"]["accuracy"] <= 1 and report["reference_accuracy"]["split"] == "test"
    ids, entropy = load_entropy_scores(report["path"])
    assert np.array_equal(np.sort(ids), np.sort(open_dataset(digits).labels("train")[0]))
    assert (entropy >= 0).all() and (entropy <= np.log(10) + 1e-9).all() and entropy.std() > 0

    # the same settings again: read from the cache, nothing trained
    monkeypatch.setattr(reference, "train_with_selector", lambda *a, **k: pytest.fail("retrained"))
    again = reference.ensure_entropy_scores(digits, epochs=1, batch_size=64)
    assert again["cached"] is True and again["path"] == report["path"]
    assert again["images_processed"] == report["images_processed"]
    monkeypatch.undo()
    # other settings: another file, the first one kept
    other = reference.ensure_entropy_scores(digits, epochs=1, batch_size=32)
    assert other["path"] != report["path"] and other["cached"] is False
    assert load_entropy_scores(report["path"])[1].tolist() == entropy.tolist()
    # a dataset whose contents changed (another card) is scored again, not served stale scores
    card_path = digits / "dataset.json"
    card = json.loads(card_path.read_text())
    card["stored_bytes"] += 1
    card_path.write_text(json.dumps(card))
    assert reference.ensure_entropy_scores(digits, epochs=1, batch_size=64)["cached"] is False


def test_entropy_selector_from_the_cached_file(digits):
    from frugalnas.train.reference import ensure_entropy_scores

    report = ensure_entropy_scores(digits, epochs=1)
    ids, labels = open_dataset(digits).labels("train")
    sel = selector_from_settings("entropy", ids, labels, subset_size=200, seed=1, entropy_scores=report["path"])
    assert len(sel.subset) == 200 and set(sel.subset) <= set(ids.tolist())
    assert sum(sel.histogram["selected"]) == 200
    with pytest.raises(ValueError, match="needs entropy_scores"):
        selector_from_settings("entropy", ids, labels, subset_size=200)


def test_cli_train_entropy_selector(digits):
    result = CliRunner().invoke(cli, ["train", str(digits), "--selector", "entropy", "--subset-size", "150",
                                      "--reference-epochs", "1", "--images-budget", "300", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["images_processed"] == 300
    assert report["entropy_reference"]["epochs"] == 1 and report["entropy_reference"]["images_processed"] > 0
    assert "reference model epoch 1/1" in result.stderr


def test_run_prepares_the_scores_once_and_every_selection_key_reaches_the_selector(digits):
    """`frugalnas run` fills selection.entropy_scores on the driver; candidates then pass the whole
    selection section to selector_from_settings, which must take every key."""
    from frugalnas.config import parse_config
    from frugalnas.runtime.experiment import prepare_entropy

    config = parse_config({"name": "t", "selection": {"policy": "entropy", "subset_size": 100},
                           "reference": {"epochs": 1}})
    lines = []
    report = prepare_entropy(config, digits, lines.append)
    assert config.selection.entropy_scores == report["path"]
    assert any("one-off cost" in line for line in lines)
    assert prepare_entropy(config, digits, lines.append) is None  # already there: nothing to do
    ids, labels = open_dataset(digits).labels("train")
    selection = config.selection.model_dump()
    sel = selector_from_settings(selection.pop("policy"), ids, labels, total_epochs=3, seed=0, **selection)
    assert len(sel.subset) == 100
