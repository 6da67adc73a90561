"""An experiment in MLflow: one parent run, a nested child run per candidate, artifacts, the model.

:class:`ExperimentTracker` wraps ``MlflowClient`` with explicit run ids (no global "active run"),
so the Tune callback on the driver can keep many candidate runs open at once. It pickles to its
ids and URI (Tune saves its callbacks with the experiment), and finds existing runs again by tag,
so a resumed search keeps logging into the runs it started.

What could not be recorded (the store broke mid-experiment: a server gone, a full or read-only
disk) is reported and listed in ``OUT/tracking_not_logged.jsonl`` (:meth:`ExperimentTracker.not_logged`,
``summary.json``'s ``tracking.not_logged``) instead of ending the experiment.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
import time
from pathlib import Path
from typing import Any, Iterable, Mapping

from frugalnas.errors import ConfigError
from frugalnas.track.location import TrackingLocation

ROLE_TAG = "frugalnas.role"
CANDIDATE_TAG = "frugalnas.candidate"  # the candidate's stable key (Tune trial id, DARTS epoch)
ARCH_TAG = "frugalnas.arch"
STATE_FILE = "tracking.json"  # in the output folder: which parent run a resumed experiment continues
NOT_LOGGED_FILE = "tracking_not_logged.jsonl"  # in the output folder: what the store failed to record
STATUS_TAG = "frugalnas.status"  # how a candidate ended: finished, failed, diverged
MAX_PARAM_CHARS = 6000  # MLflow's limit on a param value


def flatten(mapping: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; lists stay values (as JSON)."""
    flat = {}
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, name + "."))
        else:
            flat[name] = json.dumps(value) if isinstance(value, (list, tuple, dict)) else value
    return flat


class ExperimentTracker:
    """The MLflow side of one experiment (see the module docstring)."""

    def __init__(self, location: TrackingLocation, experiment_id: str, parent_run_id: str, tags: dict[str, str],
                 out: Path | None = None):
        self.location, self.experiment_id, self.parent_run_id = location, experiment_id, parent_run_id
        self.tags = dict(tags)  # strategy, selector, space: on every run
        self.out = None if out is None else Path(out)
        self._client = None
        self._candidates: dict[str, str] = {}
        self._last_step: dict[str, int] = {}  # run id -> the last step its metrics were logged at

    # ------------------------------------------------------------------ set-up

    @classmethod
    def start(cls, location: TrackingLocation, experiment: str, out: Path, *, run_name: str, tags: dict[str, str],
              params: Mapping[str, Any], resume: bool) -> "ExperimentTracker":
        """Create (or, resuming, reopen) the experiment's parent run and log its config.

        Everything here writes to the store, so a store that cannot be written (read-only, full,
        unreachable) fails here, before any work, with a :class:`ConfigError` saying so."""
        try:
            return cls._start(location, experiment, out, run_name=run_name, tags=tags, params=params, resume=resume)
        except ConfigError:
            raise
        except Exception as error:  # MLflow, SQLAlchemy and the OS raise many kinds; all mean "unusable"
            raise ConfigError(f"cannot record the experiment in the MLflow tracking store {location.uri}: "
                              f"{describe_error(error)}. Is its disk full "
                              "or read-only? Free space or fix the permissions, set another tracking.uri, or "
                              "tracking.enabled: false to run without MLflow") from None

    @classmethod
    def _start(cls, location: TrackingLocation, experiment: str, out: Path, *, run_name: str, tags: dict[str, str],
               params: Mapping[str, Any], resume: bool) -> "ExperimentTracker":
        import mlflow

        client = mlflow.MlflowClient(location.uri)
        found = client.get_experiment_by_name(experiment)
        if found is None:
            experiment_id = client.create_experiment(experiment, artifact_location=location.artifact_location)
        else:
            experiment_id = found.experiment_id
            if found.lifecycle_stage == "deleted":
                client.restore_experiment(experiment_id)
        state_path = Path(out) / STATE_FILE
        parent = None
        if resume and state_path.exists():
            state = json.loads(state_path.read_text())
            if state.get("uri") == location.uri and state.get("experiment_id") == experiment_id:
                parent = state["parent_run_id"]
                client.update_run(parent, status="RUNNING")
        tracker = cls(location, experiment_id, parent or "", tags, out)
        tracker._client = client
        if parent is None:
            run = client.create_run(experiment_id, run_name=run_name, tags={**tags, ROLE_TAG: "experiment"})
            tracker.parent_run_id = run.info.run_id
            tracker.log_params(tracker.parent_run_id, params)
            state_path.write_text(json.dumps({"uri": location.uri, "experiment_id": experiment_id,
                                              "parent_run_id": tracker.parent_run_id}, indent=2) + "\n")
        return tracker

    @property
    def client(self):
        if self._client is None:
            import mlflow

            self._client = mlflow.MlflowClient(self.location.uri)
        return self._client

    def __getstate__(self):  # what Tune pickles with the experiment: ids, not connections
        return {**self.__dict__, "_client": None}

    # ------------------------------------------------------------------ candidates

    def candidate_run(self, key: str, *, name: str, arch: str, params: Mapping[str, Any]) -> str:
        """The child run of candidate ``key`` (its number): found again by tag, or created with its params.

        After a driver was killed, a resumed search proposes again the candidates it had proposed
        since its state was last saved. The same architecture under the same key continues its run;
        a run of the key with another architecture (a proposal the resumed search no longer makes) is
        deleted (MLflow keeps it in its deleted runs), so every candidate has exactly one run."""
        if key in self._candidates:
            return self._candidates[key]
        existing = self.client.search_runs(
            [self.experiment_id], max_results=100,
            filter_string=f"tags.mlflow.parentRunId = '{self.parent_run_id}' and tags.`{CANDIDATE_TAG}` = '{key}'")
        same = [r for r in existing if r.data.tags.get(ARCH_TAG) == arch]
        for run in existing:
            if run.info.run_id != (same[0].info.run_id if same else None):
                self.client.set_tag(run.info.run_id, "frugalnas.deleted_because",
                                    f"candidate {key} became {arch} when the search resumed")
                self.client.set_terminated(run.info.run_id, "KILLED")
                self.client.delete_run(run.info.run_id)
        if same:
            run_id = same[0].info.run_id
            steps = [m.step for m in self.client.get_metric_history(run_id, "accuracy")]
            self._last_step[run_id] = max(steps, default=0)
            if same[0].info.status != "RUNNING":
                self.client.update_run(run_id, status="RUNNING")
        else:
            run = self.client.create_run(self.experiment_id, run_name=name, tags={
                **self.tags, ROLE_TAG: "candidate", CANDIDATE_TAG: key, ARCH_TAG: arch,
                "mlflow.parentRunId": self.parent_run_id})
            run_id = run.info.run_id
            self.log_params(run_id, {**params, **self.tags})
        self._candidates[key] = run_id
        return run_id

    def log_epoch(self, run_id: str, metrics: Mapping[str, float], step: int) -> bool:
        """Log a candidate's metrics of epoch ``step`` unless that epoch was logged already (a candidate
        resumed from a checkpoint older than its last logged epoch reports it again); True if logged."""
        if step <= self._last_step.get(run_id, 0):
            return False
        self.log_metrics(run_id, metrics, step=step)
        self._last_step[run_id] = step
        return True

    def end_run(self, run_id: str, status: str = "FINISHED", error: str | None = None) -> None:
        if error:
            self.client.set_tag(run_id, "frugalnas.error", error[:5000])
        self.client.set_terminated(run_id, status=status)

    # ------------------------------------------------------------------ logging

    def log_params(self, run_id: str, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, str(v)[:MAX_PARAM_CHARS]) for k, v in params.items() if v is not None]
        for start in range(0, len(items), 100):  # MLflow takes at most 100 params per batch
            self.client.log_batch(run_id, params=items[start : start + 100])

    def log_metrics(self, run_id: str, metrics: Mapping[str, float], step: int = 0) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, int(step)) for k, v in metrics.items()
                 if isinstance(v, (int, float)) and not isinstance(v, bool)]
        if items:
            self.client.log_batch(run_id, metrics=items)

    def set_tags(self, run_id: str, tags: Mapping[str, str]) -> None:
        for key, value in tags.items():
            self.client.set_tag(run_id, key, str(value))

    def log_dict(self, run_id: str, data: Any, path: str) -> None:
        self.client.log_dict(run_id, data, path)

    def log_text(self, run_id: str, text: str, path: str) -> None:
        self.client.log_text(run_id, text, path)

    def log_figure(self, run_id: str, figure, path: str) -> None:
        import matplotlib.pyplot as plt

        self.client.log_figure(run_id, figure, path)
        plt.close(figure)

    def log_file(self, run_id: str, path: str | Path, folder: str | None = None) -> None:
        self.client.log_artifact(run_id, str(path), folder)

    def log_model(self, model, *, registered_name: str | None, input_example=None, extra_files=(),
                  version_tags: Mapping[str, Any] | None = None) -> str | None:
        """The trained model as an ``mlflow.pytorch`` model of the parent run, registered under
        ``registered_name``; returns the registered version (None when not registered).

        With an ``input_example`` (a real batch) the model is saved in MLflow's ``pt2`` format
        (torch.export), which loads without unpickling code (MLflow checks the archive when pickle
        deserialization is disallowed); without one, or if the model cannot be exported, as a
        pickle. ``extra_files`` travel in the model's ``extra_files/`` folder, and ``version_tags``
        go on the registered version."""
        import mlflow
        import mlflow.pytorch
        import torch

        common = dict(name="model", pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"],
                      extra_files=[str(f) for f in extra_files] or None, registered_model_name=registered_name)
        with tracking_uri_set_to(self.location.uri):
            with mlflow.start_run(run_id=self.parent_run_id, nested=mlflow.active_run() is not None):
                info, serialization = None, "pt2"
                if input_example is not None:
                    try:
                        info = mlflow.pytorch.log_model(model, serialization_format="pt2",
                                                        input_example=input_example.numpy(), **common)
                    except Exception as error:  # a model torch.export cannot trace: fall back, say so
                        self.client.set_tag(self.parent_run_id, "frugalnas.pt2_error", str(error)[:2000])
                if info is None:
                    serialization = "pickle"
                    # loads back as the nn.Module that was trained; needs pickle deserialization allowed
                    info = mlflow.pytorch.log_model(model, serialization_format="pickle", **common)
        self.client.update_run(self.parent_run_id, status="RUNNING")  # start_run's exit ended it
        self.client.set_tag(self.parent_run_id, "frugalnas.model_serialization", serialization)
        version = getattr(info, "registered_model_version", None)
        if version is None:
            return None
        for key, value in {**(version_tags or {}), "frugalnas.model_serialization": serialization}.items():
            if value is not None:
                self.client.set_model_version_tag(registered_name, str(version), key, str(value)[:5000])
        return str(version)

    def finish(self, status: str = "FINISHED", error: str | None = None) -> None:
        self.end_run(self.parent_run_id, status, error)

    # ------------------------------------------------------------------ what was not recorded

    def record_not_logged(self, what: str, error: BaseException) -> dict:
        """Note that ``what`` could not be recorded (kept in ``OUT/tracking_not_logged.jsonl``, which
        survives a resume); returns the entry."""
        entry = {"what": what, "error": describe_error(error), "time": time.strftime("%Y-%m-%dT%H:%M:%S")}
        if self.out is not None:
            try:
                with (self.out / NOT_LOGGED_FILE).open("a") as handle:
                    handle.write(json.dumps(entry) + "\n")
            except OSError:  # the output folder shares the broken disk: the log line is all there is
                pass
        return entry

    def not_logged(self) -> list[dict]:
        """Everything this experiment's store failed to record, in order (resumed runs included)."""
        path = None if self.out is None else self.out / NOT_LOGGED_FILE
        if path is None or not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    # ------------------------------------------------------------------ reading back

    def candidate_runs(self) -> list:
        return self.client.search_runs([self.experiment_id],
                                       filter_string=f"tags.mlflow.parentRunId = '{self.parent_run_id}'",
                                       max_results=5000)


@contextlib.contextmanager
def tracking_uri_set_to(uri: str):
    """MLflow's global tracking URI set to ``uri`` for the block (the fluent ``log_model`` needs it).

    ``mlflow.set_tracking_uri`` also exports ``MLFLOW_TRACKING_URI`` for subprocesses, so restoring
    it means restoring that variable as it was: left set, a later run in this process (or one it
    starts) would silently track into this store."""
    import mlflow

    saved = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(saved)  # None unsets the variable again
        if saved is not None:
            os.environ["MLFLOW_TRACKING_URI"] = saved


def describe_error(error: BaseException) -> str:
    """``Type: the line of the message that says what went wrong``: SQLAlchemy, under MLflow, puts a
    note about autoflush first and the database's own error (``(sqlite3.OperationalError) database or
    disk is full``) after it."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    telling = [line for line in lines if re.search(r"\(\w+\.\w*Error\)|\[Errno \d+\]", line)]
    line = (telling or lines or [""])[0]
    return f"{type(error).__name__}: {line[:300]}" if line else type(error).__name__


def arch_params(space, arch) -> dict[str, str]:
    """The architecture's decisions as params (``arch.<decision>``): what the compare view lines up."""
    return {f"arch.{param_name(name)}": str(options[i])
            for (name, options), i in zip(space.choices(), space.to_choices(arch)) if i >= 0}  # -1: inactive


def param_name(text: str) -> str:
    """``text`` in the characters MLflow allows in names (cell edges are named like ``2<-1``)."""
    return re.sub(r"[^\w\-. :/]", "_", text.replace("<-", "-from-"))


def log_table(tracker: ExperimentTracker, run_id: str, rows: Iterable[Mapping[str, Any]], path: str) -> None:
    """A list of flat dicts as a CSV artifact (the leaderboard)."""
    import csv

    rows = list(rows)
    if not rows:
        return
    with tempfile.TemporaryDirectory() as folder:
        file = Path(folder) / Path(path).name
        with file.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        tracker.log_file(run_id, file, str(Path(path).parent) if Path(path).parent != Path(".") else None)
