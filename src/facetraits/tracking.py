"""MLflow tracking: one run per stage invocation, through an explicit client (no fluent global run).

The default store is a local SQLite file; the same code logs to an `mlflow server` URL.
"""

from __future__ import annotations

import dataclasses
import os
import re
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import requests
from mlflow.entities import Metric, Param, RunStatus, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from sqlalchemy.exc import SQLAlchemyError

from facetraits.batching import batches
from facetraits.config import TrackingParams
from facetraits.errors import ConfigError

TAG_STAGE = "facetraits.stage"
TAG_FINGERPRINT = "facetraits.data_fingerprint"
TAG_VARIANT = "facetraits.variant"
TAG_GIT_COMMIT = "mlflow.source.git.commit"
TAG_HOST = "facetraits.host"
TAG_PID = "facetraits.pid"
_BATCH = 100


def flatten_params(params: Any, prefix: str = "") -> dict[str, str]:
    """Dotted keys as in params.yaml (`data.image_size`), so runs compare knob by knob in the UI."""
    if dataclasses.is_dataclass(params):
        params = dataclasses.asdict(params)
    flat: dict[str, str] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if dataclasses.is_dataclass(value):
            value = dataclasses.asdict(value)
        if isinstance(value, Mapping):
            flat.update(flatten_params(value, prefix=f"{name}."))
        else:
            flat[name] = str(list(value) if isinstance(value, tuple) else value)
    return flat


def metric_name(label: str) -> str:
    """A readable label (`Hand-crafted (colour + LBP)`) as an MLflow metric name, which allows only [\\w .:/-]."""
    return " ".join(re.sub(r"[^\w .:/-]+", " ", label).split())


def git_commit(cwd: Path | None = None) -> str | None:
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() or None


def _check_reachable(uri: str, timeout_s: float) -> None:
    """Fail within seconds, naming the URI, instead of MLflow's minutes of retries."""
    if not uri.startswith(("http://", "https://")):
        return
    try:
        response = requests.get(uri.rstrip("/") + "/health", timeout=timeout_s)
    except requests.RequestException as exc:
        raise ConfigError(f"tracking.uri: MLflow server {uri} is unreachable: {exc}") from None
    if response.status_code != 200:
        raise ConfigError(
            f"tracking.uri: {uri} answers but is not an MLflow server (GET /health: HTTP {response.status_code})"
        )


def _store_error(uri: str, exc: Exception) -> ConfigError:
    """A store that answers but is not MLflow's (a corrupt mlflow.db, another web server), named by the key."""
    reason = str(getattr(exc, "orig", None) or getattr(exc, "message", None) or exc).split(" Response body:")[0]
    reason = reason.strip().splitlines()[0][:200]
    return ConfigError(f"tracking.uri: {uri} is not a usable MLflow tracking store: {reason}")


def _is_local_store(uri: str) -> bool:
    return uri.startswith(("sqlite:", "file:")) or "://" not in uri


def experiment_id(client: MlflowClient, params: TrackingParams) -> str:
    """The experiment's id, created on first use with artifacts beside a local store."""
    experiment = client.get_experiment_by_name(params.experiment)
    if experiment is not None:
        return experiment.experiment_id
    location = Path(params.artifacts).resolve().as_uri() if _is_local_store(params.uri) else None
    return client.create_experiment(params.experiment, artifact_location=location)


@dataclass(frozen=True)
class StageRun:
    """A started MLflow run and the client that writes to it."""

    client: MlflowClient
    run_id: str

    def log_metrics(self, metrics: Mapping[str, float], step: int = 0) -> None:
        timestamp = int(time.time() * 1000)
        entries = [Metric(k, float(v), timestamp, step) for k, v in metrics.items() if v is not None]
        for part in batches(len(entries), _BATCH):
            self.client.log_batch(self.run_id, metrics=entries[part])

    def log_params(self, params: Mapping[str, str]) -> None:
        entries = [Param(k, v) for k, v in params.items()]
        for part in batches(len(entries), _BATCH):
            self.client.log_batch(self.run_id, params=entries[part])

    def set_tags(self, tags: Mapping[str, str]) -> None:
        self.client.log_batch(self.run_id, tags=[RunTag(k, v) for k, v in tags.items()])

    def log_image(self, image: np.ndarray, artifact_file: str) -> None:
        self.client.log_image(self.run_id, image, artifact_file=artifact_file)

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path)

    def log_text(self, text: str, artifact_file: str) -> None:
        self.client.log_text(self.run_id, text, artifact_file)

    def log_artifacts(self, folder: Path, artifact_path: str | None = None) -> None:
        self.client.log_artifacts(self.run_id, str(folder), artifact_path)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def close_orphaned_runs(client: MlflowClient, experiment: str, stage: str) -> list[str]:
    """Mark KILLED the RUNNING runs of `stage` whose process on this host is gone (e.g. SIGKILLed)."""
    host = socket.gethostname()
    running = client.search_runs(
        [experiment],
        filter_string=f"attributes.status = 'RUNNING' and tags.`{TAG_STAGE}` = '{stage}' and tags.`{TAG_HOST}` = '{host}'",
    )
    orphaned = [r.info.run_id for r in running if r.data.tags.get(TAG_PID, "").isdigit() and not _process_alive(int(r.data.tags[TAG_PID]))]
    for run_id in orphaned:
        client.set_tag(run_id, "facetraits.closed_because", "its process died before finishing (found by the next run)")
        client.set_terminated(run_id, RunStatus.to_string(RunStatus.KILLED))
    return orphaned


@contextmanager
def stage_run(params: TrackingParams, stage: str, run_params: Mapping[str, str]) -> Iterator[StageRun]:
    """A run tagged with stage and git commit; FINISHED on success, FAILED if the stage raises."""
    _check_reachable(params.uri, params.connect_timeout_s)
    try:
        client = MlflowClient(tracking_uri=params.uri)
        experiment = experiment_id(client, params)
        close_orphaned_runs(client, experiment, stage)
    except (MlflowException, SQLAlchemyError) as exc:
        raise _store_error(params.uri, exc) from None
    tags = {TAG_STAGE: stage, TAG_HOST: socket.gethostname(), TAG_PID: str(os.getpid())}
    commit = git_commit()
    if commit:
        tags[TAG_GIT_COMMIT] = commit
    run = client.create_run(experiment, tags=tags, run_name=stage)
    stage_run_ = StageRun(client, run.info.run_id)
    try:
        stage_run_.log_params(run_params)
        yield stage_run_
    except BaseException:
        client.set_terminated(run.info.run_id, RunStatus.to_string(RunStatus.FAILED))
        raise
    client.set_terminated(run.info.run_id, RunStatus.to_string(RunStatus.FINISHED))
