"""Where an experiment is tracked, and a fast check that it can be.

With no ``tracking.uri`` in the config and no ``MLFLOW_TRACKING_URI`` in the environment, runs go to
an embedded store inside the output folder: ``OUT/mlflow/mlflow.db`` (SQLite) and
``OUT/mlflow/artifacts``. Paths are absolute because Ray Tune trials change directory.
"""
from __future__ import annotations

import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from frugalnas.errors import ConfigError

EMBEDDED_FOLDER = "mlflow"
EMBEDDED_DB = "mlflow.db"
#: URI schemes MLflow 3 accepts for a tracking store.
SCHEMES = ("http", "https", "sqlite", "postgresql", "mysql", "mssql", "databricks", "file")


@dataclass(frozen=True)
class TrackingLocation:
    uri: str
    #: where new experiments keep their artifacts; None lets the server decide (proxied artifacts)
    artifact_location: str | None
    embedded: bool

    @property
    def is_server(self) -> bool:
        return self.uri.startswith(("http://", "https://"))


def embedded_paths(out: str | Path) -> tuple[Path, Path]:
    """(SQLite database, artifact folder) of the embedded store of an output folder."""
    folder = Path(out).expanduser().resolve() / EMBEDDED_FOLDER
    return folder / EMBEDDED_DB, folder / "artifacts"


def resolve_location(uri: str | None, out: str | Path) -> TrackingLocation:
    """The config's ``tracking.uri``, else ``MLFLOW_TRACKING_URI``, else the embedded store."""
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI") or None
    if uri is None:
        database, artifacts = embedded_paths(out)
        return TrackingLocation(f"sqlite:///{database}", artifacts.as_uri(), embedded=True)
    scheme = uri.split(":", 1)[0].lower() if ":" in uri else ""
    if scheme not in SCHEMES:
        raise ConfigError(f"tracking.uri {uri!r} is not an MLflow tracking URI; allowed schemes: "
                          f"{', '.join(SCHEMES)} (e.g. http://127.0.0.1:5000 or sqlite:////abs/path/mlflow.db), "
                          "or leave it unset for the embedded store in the output folder")
    if scheme == "sqlite" and not uri.startswith("sqlite:////"):
        raise ConfigError(f"tracking.uri {uri!r} is a relative SQLite path; Ray trials change directory, so "
                          "give an absolute one: sqlite:////abs/path/mlflow.db")
    return TrackingLocation(uri, None, embedded=False)


#: A store's folder with less free space than this counts as full: an experiment records more.
MIN_FREE_BYTES = 1 << 20


def check_writable(folder: Path, what: str) -> None:
    """Fail fast (ConfigError) when ``folder`` cannot take a store's writes: it cannot be created, is
    not writable (a read-only disk, no permission) or has less than 1 MiB free (a full disk)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ConfigError(f"{what} {folder} cannot be created: {error.strerror or error}") from None
    hint = ("; free space or fix the permissions, set another tracking.uri, or tracking.enabled: false to run "
            "without MLflow")
    if not os.access(folder, os.W_OK):
        raise ConfigError(f"{what} {folder} cannot be written (a read-only disk, or no permission){hint}")
    stats = os.statvfs(folder)
    free = stats.f_bavail * stats.f_frsize
    if free < MIN_FREE_BYTES:
        raise ConfigError(f"{what} {folder} has {free:,} bytes free: its disk is full{hint}")


def check_reachable(location: TrackingLocation, timeout: float = 5.0) -> None:
    """Fail fast, before any training, when the tracking store cannot be used: a server that does not
    answer, a SQLite store or artifact folder on a read-only or full disk, a store MLflow cannot open."""
    if location.uri.startswith("sqlite:///"):
        check_writable(Path(location.uri.removeprefix("sqlite:///")).parent, "the MLflow store's folder")
    if location.artifact_location and location.artifact_location.startswith("file://"):
        from urllib.parse import unquote, urlparse

        check_writable(Path(unquote(urlparse(location.artifact_location).path)), "the MLflow artifact folder")
    if location.embedded:
        return
    if location.is_server:
        health = location.uri.rstrip("/") + "/health"
        try:
            with urllib.request.urlopen(health, timeout=timeout) as response:
                if response.status != 200:
                    raise OSError(f"HTTP {response.status}")
        except (OSError, urllib.error.URLError) as error:
            raise ConfigError(f"the MLflow tracking server at {location.uri} does not answer ({health}: {error}); "
                              "start it (mlflow server --host 127.0.0.1 --port 5000 ...), fix tracking.uri / "
                              "MLFLOW_TRACKING_URI, or unset both for the embedded store") from None
        return
    import mlflow

    try:
        mlflow.MlflowClient(location.uri).search_experiments(max_results=1)
    except Exception as error:  # MLflow raises many kinds; all mean the store is unusable
        raise ConfigError(f"cannot use the MLflow tracking store {location.uri}: "
                          f"{str(error).splitlines()[0][:300]}") from None
