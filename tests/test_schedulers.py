"""The Tune schedulers a search can name, driven directly (no Ray cluster): the decisions Tune acts on."""
from ray.tune.schedulers import HyperBandScheduler, TrialScheduler

from frugalnas.runtime.tune_search import SCHEDULERS


class FakeTrial:
    def __init__(self, name: str):
        self.trial_id, self.status, self.is_saving, self.last_result = name, "PENDING", False, {}

    def __repr__(self):
        return self.trial_id


class FakeController:
    """What a scheduler calls back on Tune's controller: stopping a trial, as Tune's ``stop_trial`` does."""

    def __init__(self, scheduler):
        self.scheduler = scheduler

    def stop_trial(self, trial):
        if trial.status in ("PENDING", "PAUSED"):
            self.scheduler.on_trial_remove(self, trial)
        elif trial.status == "RUNNING":
            self.scheduler.on_trial_complete(self, trial, trial.last_result)
        trial.status = "TERMINATED"


def report(scheduler, controller, trial, iteration, accuracy):
    trial.status = "RUNNING"
    trial.last_result = {"training_iteration": iteration, "accuracy": accuracy}
    decision = scheduler.on_trial_result(controller, trial, trial.last_result)
    if decision == TrialScheduler.PAUSE:
        trial.status = "PAUSED"
    return decision


def last_trial_finishes_while_another_is_paused(scheduler):
    """Two candidates of a HyperBand bracket that trains straight to max_t (4 epochs): the first reaches
    epoch 4 while the second is behind, so it is paused; the second's last result arrives with its
    trainable already returned (done), which Tune hands to ``on_trial_complete``, not ``on_trial_result``."""
    scheduler.set_search_properties("accuracy", "max")
    controller = FakeController(scheduler)
    first, second = FakeTrial("first"), FakeTrial("second")
    for trial in (first, second):
        scheduler.on_trial_add(controller, trial)
    for epoch in range(1, 4):
        assert report(scheduler, controller, first, epoch, 0.1 * epoch) == TrialScheduler.CONTINUE
    assert report(scheduler, controller, first, 4, 0.5) == TrialScheduler.PAUSE
    for epoch in range(1, 4):
        assert report(scheduler, controller, second, epoch, 0.1 * epoch) == TrialScheduler.CONTINUE
    second.last_result = {"training_iteration": 4, "accuracy": 0.4, "done": True}
    controller.stop_trial(second)
    return first, controller


def test_hyperband_stops_a_paused_trial_once_its_bracket_is_finished():
    first, controller = last_trial_finishes_while_another_is_paused(SCHEDULERS.get("hyperband")(4))
    assert first.status == "TERMINATED"
    assert controller.scheduler.choose_trial_to_run(controller) is None


def test_tunes_own_hyperband_leaves_that_trial_paused_forever():
    """The Ray bug the registered scheduler works around (a search hung in CI). If this starts failing,
    Ray has fixed it and ``FinishingHyperBand`` can go."""
    first, controller = last_trial_finishes_while_another_is_paused(
        HyperBandScheduler(time_attr="training_iteration", max_t=4, reduction_factor=2))
    assert first.status == "PAUSED"
    assert controller.scheduler.choose_trial_to_run(controller) is None  # nothing will ever resume it

