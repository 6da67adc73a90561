"""Image budgets in the training loop: exact cuts mid-epoch, schedules over images, raising the
budget, resuming between batches, the loss trace."""
import io
import json
import math

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from frugalnas.cli import cli
from frugalnas.data import open_dataset
from frugalnas.data.torch_dataset import ImageSplit
from frugalnas.errors import ConfigError
from frugalnas.selection import make_selector
from frugalnas.train import SelectorTrainer, TrainSettings, build_arch
from frugalnas.train.classify import ONECYCLE_START, ONECYCLE_WARMUP, scheduled_lr


@pytest.fixture(scope="module")
def train_data(digits_dataset):
    torch.set_num_threads(1)
    return ImageSplit(open_dataset(digits_dataset), "train")


def trainer_for(train_data, policy="random", *, seed=0, **settings):
    torch.manual_seed(seed)
    model, _ = build_arch("baseline:cnn", 10, 1)
    options = {"subset_size": 60, "seed": seed}
    if policy == "full":
        options = {"seed": seed}
    if policy == "dynamic-random":
        options.update(warmup_epochs=1, mastery=0.2, hardness=0.3)
    selector = make_selector(policy, train_data.ids, train_data.labels, **options)
    settings.setdefault("batch_size", 16)
    return SelectorTrainer(model, train_data, selector, TrainSettings(**settings))


def run(trainer):
    results = []
    while not trainer.done:
        results.append(trainer.run_epoch())
    return results


def assert_same_training(a, b):
    for x, y in zip(a.model.state_dict().values(), b.model.state_dict().values()):
        torch.testing.assert_close(x, y, rtol=0, atol=0)
    assert a.selector.history == b.selector.history
    assert a.loss_trace == b.loss_trace
    assert a.images_processed == b.images_processed == a.selector.images_processed == b.selector.images_processed


def test_budget_stops_exactly_mid_epoch(train_data):
    trainer = trainer_for(train_data, epochs=None, images_budget=130)  # 60 per epoch: 2 epochs and 10 images
    results = run(trainer)
    assert trainer.images_processed == trainer.selector.images_processed == 130
    assert [r.images for r in results] == [60, 60, 10]
    assert [r.complete for r in results] == [True, True, False]
    assert results[-1].images_processed == 130
    assert trainer.epoch == 2 and trainer.done and trainer.budget_reached
    # one trace entry per optimiser step, the last batch cut from 16 to 10 images
    steps = [i for i, _ in trainer.loss_trace]
    assert steps[-1] == 130 and steps[-1] - steps[-2] == 10
    assert len(steps) == 2 * math.ceil(60 / 16) + 1
    assert all(np.isfinite(v) for _, v in trainer.loss_trace)
    with pytest.raises(RuntimeError, match="raise_budget"):
        trainer.run_epoch()


def test_whichever_ends_first(train_data):
    by_epochs = trainer_for(train_data, epochs=2, images_budget=1000)
    run(by_epochs)
    assert by_epochs.images_processed == 120 and by_epochs.epoch == 2
    by_budget = trainer_for(train_data, epochs=5, images_budget=70)
    run(by_budget)
    assert by_budget.images_processed == 70 and by_budget.epoch == 1


def test_raising_the_budget_continues_like_one_uninterrupted_run(train_data):
    """Budgets on the epoch's batch grid (60 per epoch, batch 16: 0, 16, 32, 48, 60): identical to one run."""
    straight = trainer_for(train_data, epochs=None, images_budget=250, schedule_images=250)
    run(straight)
    stepped = trainer_for(train_data, epochs=None, images_budget=92, schedule_images=250)
    run(stepped)
    assert stepped.images_processed == 92 and not stepped.selector.history[-1]["n_observed"] == 60
    stepped.raise_budget(168)
    run(stepped)
    assert stepped.images_processed == 168
    stepped.raise_budget(250)
    run(stepped)
    assert_same_training(straight, stepped)
    with pytest.raises(ValueError, match="already"):
        stepped.raise_budget(100)


def test_a_cut_batch_off_the_grid_takes_two_steps_and_nothing_else_changes(train_data):
    straight = trainer_for(train_data, epochs=None, images_budget=250, schedule_images=250)
    run(straight)
    stepped = trainer_for(train_data, epochs=None, images_budget=130, schedule_images=250)
    run(stepped)
    stepped.raise_budget(250)
    run(stepped)
    assert [i for i, _ in stepped.loss_trace] == sorted([i for i, _ in straight.loss_trace] + [130])
    assert stepped.selector.state_dict()["policy_state"] == straight.selector.state_dict()["policy_state"]
    assert stepped.images_processed == straight.images_processed == 250


@pytest.mark.parametrize("policy", ["random", "dynamic-random", "full", "stream"])
def test_resume_mid_epoch_equals_uninterrupted(train_data, policy):
    """A checkpoint taken where the budget cut an epoch (off the batch grid), reloaded into a fresh
    trainer and continued, equals the same trainer continued without the checkpoint (model,
    optimiser, selector, loss trace, schedule)."""
    total = 400 if policy != "full" else 1400
    cut = total // 2 + 7
    settings = dict(epochs=None, schedule_images=total, schedule="onecycle")
    straight = trainer_for(train_data, policy, seed=2, images_budget=cut, **settings)
    run(straight)
    assert straight.selector.plan is not None and straight._position is not None  # stopped mid-epoch
    buffer = io.BytesIO()
    torch.save(straight.state_dict(), buffer)
    buffer.seek(0)
    straight.raise_budget(total)
    run(straight)
    torch.manual_seed(123)  # a different global RNG state: the checkpoint must not depend on it
    resumed = trainer_for(train_data, policy, seed=2, images_budget=10, **settings)
    resumed.load_state_dict(torch.load(buffer, weights_only=False))
    assert resumed.images_budget == cut  # the saved budget, not the constructor's
    resumed.raise_budget(total)
    run(resumed)
    assert_same_training(straight, resumed)
    if policy == "dynamic-random":
        assert straight.selector.subset_updates >= 1


def test_budget_schedule_is_per_step_and_restarts_at_the_update(train_data):
    settings = dict(epochs=None, images_budget=600, lr=0.1)
    trainer = trainer_for(train_data, "dynamic-random", **settings)
    lrs = []
    while not trainer.done:
        before = trainer.images_processed
        result = trainer.run_epoch()
        if result.updated:
            assert trainer.cycle_start_images == trainer.images_processed == before
            restart = before
        lrs.append((result, trainer.lr))
    assert trainer.selector.subset_updates >= 1
    # the last step's lr follows the cosine over the images left after the last restart
    last_step_start = trainer.loss_trace[-2][0]
    expected = scheduled_lr((last_step_start - restart) / (600 - restart), lr=0.1)
    assert trainer.lr == pytest.approx(expected)
    assert 0 < trainer.lr < 0.1 * 0.2


def test_schedules():
    assert scheduled_lr(0, lr=1.0) == 1.0 and scheduled_lr(1, lr=1.0) == pytest.approx(0.0)
    assert scheduled_lr(0.5, lr=1.0) == pytest.approx(0.5)
    assert scheduled_lr(0, lr=1.0, schedule="onecycle") == pytest.approx(ONECYCLE_START)
    assert scheduled_lr(ONECYCLE_WARMUP / 2, lr=1.0, schedule="onecycle") == pytest.approx((1 + ONECYCLE_START) / 2)
    assert scheduled_lr(ONECYCLE_WARMUP, lr=1.0, schedule="onecycle") == pytest.approx(1.0)
    assert scheduled_lr(1, lr=1.0, schedule="onecycle") == pytest.approx(0.0)
    assert scheduled_lr(2, lr=1.0) == pytest.approx(0.0)  # clipped
    with pytest.raises(ValueError, match="allowed: cosine, onecycle"):
        scheduled_lr(0.3, lr=1.0, schedule="step")


def test_epoch_schedule_unchanged_without_budget(train_data):
    trainer = trainer_for(train_data, epochs=4, lr=0.2)
    seen = [(r.epoch, r.lr) for r in run(trainer)]
    assert seen == [(e, pytest.approx(0.1 * (1 + math.cos(math.pi * e / 4)))) for e in range(4)]


@pytest.mark.parametrize("kwargs, match", [
    ({"epochs": None}, "needs an end"),
    ({"images_budget": 0}, "images_budget must be an integer >= 1"),
    ({"schedule": "linear"}, "allowed: cosine, onecycle"),
    ({"images_budget": 100, "schedule_images": 50}, "shorter than images_budget"),
    ({"epochs": 2.5}, "epochs must be an integer"),
])
def test_bad_settings_are_named(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        TrainSettings(**kwargs)


def test_cli_train_images_budget(digits_dataset, tmp_path):
    import shutil

    digits = shutil.copytree(digits_dataset, tmp_path / "digits")
    result = CliRunner().invoke(cli, ["train", str(digits), "--selector", "random", "--subset-size", "100",
                                      "--images-budget", "250", "--schedule", "onecycle", "--batch-size", "32",
                                      "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["images_processed"] == 250 and report["images_budget"] == 250
    assert report["schedule"] == "onecycle" and report["epochs"] is None
    assert "budget reached mid-epoch" in result.stderr
    bad = CliRunner().invoke(cli, ["train", str(digits), "--selector", "random", "--images-budget", "0"])
    assert bad.exit_code == 2 and "images_budget" in bad.stderr


def test_cli_train_dds_repair_options(digits_dataset, tmp_path):
    import shutil

    digits = shutil.copytree(digits_dataset, tmp_path / "digits")
    result = CliRunner().invoke(cli, ["train", str(digits), "--selector", "dynamic-random", "--subset-size", "100",
                                      "--order", "blocks", "--easy-quantile", "0.8", "--warmup-epochs", "1",
                                      "--epochs", "4", "--json"])
    assert result.exit_code == 0, result.output
    params = json.loads(result.stdout.strip().splitlines()[-1])["selector_params"]
    assert params["order"] == "blocks" and params["easy_quantile"] == 0.8 and params["mastery_rule"] == "accuracy"
    bad = CliRunner().invoke(cli, ["train", str(digits), "--selector", "dds", "--easy-quantile", "1.5"])
    assert bad.exit_code == 2 and "easy_quantile" in bad.stderr
