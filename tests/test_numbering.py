"""One numbering of candidates everywhere: progress lines, leaderboard, MLflow run names, summary.json."""
from types import SimpleNamespace

from click.testing import CliRunner


def _trial(number, arch, accuracy, status="TERMINATED"):
    return SimpleNamespace(config={"arch": arch, "suggestion": number}, trial_id=f"t{number}",
                           last_result={"accuracy": accuracy, "epoch": 2, "images_processed": 100, "params": 1234},
                           error_file=None, status=status, run_metadata=SimpleNamespace(num_failures=0))


def test_progress_lines_name_candidates_by_their_number_not_their_finishing_order():
    from frugalnas.runtime.tune_search import TrialProgress

    lines = []
    progress = TrialProgress(lines.append, budget=24)
    progress.on_trial_complete(0, [], _trial(21, "a", 0.5))  # finishes first, but was proposed 21st
    progress.on_trial_error(0, [], _trial(3, "b", None, status="ERROR"))
    assert lines[0].startswith("  candidate 21/24 (1 finished): val acc 0.5000")
    assert lines[1].startswith("  candidate 3/24 (2 finished) failed after 2 epoch(s)") and lines[1].endswith("  b")


def test_summary_trials_and_leaderboard_carry_the_same_number(monkeypatch):
    from frugalnas.cli import _print_summary
    from frugalnas.runtime.search_engines import trial_table

    trials = trial_table([_trial(2, "x", 0.4), _trial(1, "y", 0.9)])
    assert [(t["candidate"], t["arch"]) for t in trials] == [(1, "y"), (2, "x")]
    summary = {"trials": trials, "best_arch": "y", "search_images_processed": 0, "search_wall_seconds": 1.0,
               "strategy": "random", "selection": "full", "final_test_accuracy": 0.9, "final_params": 10,
               "output_dir": "/tmp/x"}
    import click

    out = CliRunner().invoke(click.command()(lambda: _print_summary(summary)), [])
    rows = [line.split() for line in out.output.splitlines()[2:4]]
    assert rows == [["1", "0.9000", "1,234", "100", "y"], ["2", "0.4000", "1,234", "100", "x"]]


def test_mlflow_candidate_runs_are_named_by_the_same_number(tmp_path):
    import numpy as np

    from frugalnas.runtime.tracking import CandidateTracking
    from frugalnas.spaces import load_space
    from frugalnas.track.location import resolve_location
    from frugalnas.track.runs import ExperimentTracker

    tracker = ExperimentTracker.start(resolve_location(None, tmp_path), "numbering", tmp_path, run_name="n", tags={},
                                      params={}, resume=False)
    space = load_space("nb201")
    callback = CandidateTracking(tracker, space, print)
    callback.on_trial_start(0, [], _trial(21, str(space.sample(np.random.default_rng(0))), None))
    (run,) = tracker.candidate_runs()
    assert run.info.run_name == "candidate-021" and run.data.params["candidate"] == "21"
