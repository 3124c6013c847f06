"""MLflow tracking: one run per stage invocation, through an explicit client (no fluent global run).

The stage runs of one `dvc repro` or `dvc exp run` nest under one study run, so the UI shows a study as one
thing. The default store is a local SQLite file; the same code logs to an `mlflow server` URL.
"""

from __future__ import annotations

import dataclasses
import getpass
import hashlib
import json
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
from mlflow.entities import Dataset, DatasetInput, InputTag, Metric, Param, RunStatus, RunTag
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
TAG_STUDY = "facetraits.study"
TAG_ROLE = "facetraits.role"  # "study" on a study's parent run
TAG_PARENT = "mlflow.parentRunId"
TAG_DESCRIPTION = "mlflow.note.content"  # the run's description in the UI
# MLflow 3's UI opens an experiment on its GenAI pages unless this tag says it holds model training
TAG_EXPERIMENT_KIND, MODEL_TRAINING = "mlflow.experimentKind", "custom_model_development"
STUDY_ENV = "FACETRAITS_STUDY"  # one study id for stages that no single dvc process launches (SLURM, several nodes)
_BATCH = 100


@contextmanager
def mlflow_environment(**variables: str | None) -> Iterator[None]:
    """MLflow reads these settings from the environment only: set for the call, then restored (None: unchanged)."""
    given = {name: value for name, value in variables.items() if value is not None}
    previous = {name: os.environ.get(name) for name in given}
    os.environ.update(given)
    try:
        yield
    finally:
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name)
            else:
                os.environ[name] = value


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


def metric_key(label: str) -> str:
    """A method's label (`Hand-crafted (colour + LBP)`) as a metric-name part: lower case, no spaces."""
    return "_".join(re.findall(r"[a-z0-9]+", label.lower()))


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
    """The experiment's id, created on first use with artifacts beside a local store, and marked as model
    training (an experiment made before that is marked on its next run) so the UI opens on its runs."""
    experiment = client.get_experiment_by_name(params.experiment)
    if experiment is None:
        location = Path(params.artifacts).resolve().as_uri() if _is_local_store(params.uri) else None
        return client.create_experiment(
            params.experiment, artifact_location=location, tags={TAG_EXPERIMENT_KIND: MODEL_TRAINING}
        )
    if TAG_EXPERIMENT_KIND not in experiment.tags:
        client.set_experiment_tag(experiment.experiment_id, TAG_EXPERIMENT_KIND, MODEL_TRAINING)
    return experiment.experiment_id


def experiment_page(server: str, experiment: str) -> str:
    """The UI's page of an experiment's runs, in its model-training view whatever the browser last chose."""
    return f"{server.rstrip('/')}/#/experiments/{experiment}/runs?workflowType=machine_learning"


@dataclass(frozen=True)
class Study:
    """One `dvc repro` / `dvc exp run`: `key` is unique to it, `label` is what a person reads in the UI."""

    key: str
    label: str
    launcher_pid: int | None = None


def _dvc_subcommand(cmdline: list[str]) -> str | None:
    """`repro` or `exp` when the command line runs DVC (`dvc repro`, `python -m dvc exp exec-run`, ...)."""
    for index, arg in enumerate(cmdline):
        if Path(arg).name == "dvc":
            rest = [a for a in cmdline[index + 1 :] if not a.startswith("-")]
            return rest[0] if rest and rest[0] in ("repro", "exp") else None
    return None


def dvc_launcher() -> tuple[int, float] | None:
    """The pid and start time of the nearest `dvc repro` / `dvc exp` process above this one; None if there is none."""
    import psutil

    for process in psutil.Process().parents():
        try:
            if _dvc_subcommand(process.cmdline()):
                return process.pid, process.create_time()
        except psutil.Error:
            continue
    return None


def _safe_key(text: str) -> str:
    return re.sub(r"[^\w.:@+-]", "_", text)[:200]


def current_study(params_file: Path, environ: Mapping[str, str] = os.environ) -> Study | None:
    """The study this stage belongs to: $FACETRAITS_STUDY, else the `dvc repro` / `dvc exp run` that launched it
    (DVC sets DVC_EXP_NAME for experiments); None for a stage script run on its own."""
    if environ.get(STUDY_ENV):
        return Study(_safe_key(environ[STUDY_ENV]), environ[STUDY_ENV])
    launcher = dvc_launcher()
    if launcher is None:
        return None
    pid, started = launcher
    params = Path(params_file)
    params_hash = hashlib.sha256(params.read_bytes()).hexdigest()[:8] if params.is_file() else "none"
    commit = (git_commit() or "no-git")[:7]
    name = environ.get("DVC_EXP_NAME") or "repro"
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(started))
    key = _safe_key(f"{socket.gethostname()}:{pid}:{started:.2f}:{name}")
    return Study(key, f"{name} · params {params_hash} · {commit} · {when}", pid)


@dataclass(frozen=True)
class StageRun:
    """A started MLflow run and the client that writes to it."""

    client: MlflowClient
    run_id: str
    experiment_id: str = ""
    study: Study | None = None
    parent_run_id: str | None = None  # the study's run

    def log_to_study(self, metrics: Mapping[str, float | None], params: Mapping[str, str]) -> None:
        """The study's headline on its parent run, so the runs list shows each study's numbers beside it; no-op
        for a stage run by hand. Params are immutable in MLflow: a key the study already has keeps its value."""
        if self.parent_run_id is None:
            return
        logged = self.client.get_run(self.parent_run_id).data.params
        timestamp = int(time.time() * 1000)
        entries = [Metric(k, float(v), timestamp, 0) for k, v in metrics.items() if v is not None]
        fresh = [Param(k, v) for k, v in params.items() if k not in logged]
        for part in batches(len(entries), _BATCH):
            self.client.log_batch(self.parent_run_id, metrics=entries[part])
        for part in batches(len(fresh), _BATCH):
            self.client.log_batch(self.parent_run_id, params=fresh[part])

    def log_metrics(self, metrics: Mapping[str, float | None], step: int = 0, model_id: str | None = None) -> None:
        """`model_id` links the values to the logged model they score (the Models tab shows them beside it)."""
        timestamp = int(time.time() * 1000)
        entries = [Metric(k, float(v), timestamp, step, model_id=model_id) for k, v in metrics.items() if v is not None]
        for part in batches(len(entries), _BATCH):
            self.client.log_batch(self.run_id, metrics=entries[part])

    def log_dataset(self, name: str, digest: str, source: str, profile: Mapping[str, Any], context: str) -> None:
        """The data a stage read, as an MLflow dataset input: the Datasets column and the run's inputs show it."""
        dataset = Dataset(
            name=name, digest=digest, source_type="local", source=json.dumps({"uri": source}),
            profile=json.dumps(dict(profile)),
        )  # fmt: skip
        self.client.log_inputs(self.run_id, [DatasetInput(dataset, [InputTag("mlflow.data.context", context)])])

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


@contextmanager
def system_metrics(run: StageRun | None, interval_s: float) -> Iterator[None]:
    """CPU, GPU, memory, disk and network sampled into the run's `system/` metrics (the UI's System metrics)."""
    if run is None or interval_s <= 0:
        yield
        return
    from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

    monitor = SystemMetricsMonitor(run.run_id, sampling_interval=interval_s, tracking_uri=run.client.tracking_uri)
    monitor.start()
    try:
        yield
    finally:
        monitor.finish()


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def close_orphaned_runs(client: MlflowClient, experiment: str) -> list[str]:
    """Mark KILLED the RUNNING runs (stages and studies) whose process on this host is gone (e.g. SIGKILLed)."""
    host = socket.gethostname()
    running = client.search_runs(
        [experiment], filter_string=f"attributes.status = 'RUNNING' and tags.`{TAG_HOST}` = '{host}'"
    )
    orphaned = [r.info.run_id for r in running if r.data.tags.get(TAG_PID, "").isdigit() and not _process_alive(int(r.data.tags[TAG_PID]))]
    for run_id in orphaned:
        client.set_tag(run_id, "facetraits.closed_because", "its process died before finishing (found by the next run)")
        client.set_terminated(run_id, RunStatus.to_string(RunStatus.KILLED))
    return orphaned


def _source_tags(source: str) -> dict[str, str]:
    """What the UI's Source and User columns show; git's commit makes the run traceable to the code."""
    tags = {"mlflow.source.name": source, "mlflow.source.type": "LOCAL", "mlflow.user": getpass.getuser()}
    commit = git_commit()
    if commit:
        tags[TAG_GIT_COMMIT] = commit
    return tags


def study_run_id(client: MlflowClient, experiment: str, study: Study) -> str:
    """The study's parent run, created by its first stage; RUNNING again while each later stage runs."""
    found = client.search_runs(
        [experiment], filter_string=f"tags.`{TAG_STUDY}` = '{study.key}' and tags.`{TAG_ROLE}` = 'study'", max_results=1
    )
    if found:
        client.update_run(found[0].info.run_id, status=RunStatus.to_string(RunStatus.RUNNING))
        return found[0].info.run_id
    tags = {
        TAG_STUDY: study.key,
        TAG_ROLE: "study",
        TAG_HOST: socket.gethostname(),
        TAG_DESCRIPTION: (
            f"Study {study.label}: one `dvc repro` / `dvc exp run` of the pipeline. Its stage runs are nested below; "
            "stages DVC found up to date did not run and have no run here."
        ),
        **_source_tags("dvc.yaml"),
    }
    if study.launcher_pid is not None:
        tags[TAG_PID] = str(study.launcher_pid)
    return client.create_run(experiment, tags=tags, run_name=f"study {study.label}").info.run_id


@contextmanager
def stage_run(
    params: TrackingParams, stage: str, run_params: Mapping[str, str], study: Study | None = None,
    description: str = "", source: str = "",
) -> Iterator[StageRun]:
    """A run tagged with stage and git commit, nested under its study's run; FINISHED on success, FAILED if the
    stage raises (and so is the study's run, until its next stage starts)."""
    _check_reachable(params.uri, params.connect_timeout_s)
    try:
        client = MlflowClient(tracking_uri=params.uri)
        experiment = experiment_id(client, params)
        close_orphaned_runs(client, experiment)
        parent = None if study is None else study_run_id(client, experiment, study)
    except (MlflowException, SQLAlchemyError) as exc:
        raise _store_error(params.uri, exc) from None
    tags = {TAG_STAGE: stage, TAG_HOST: socket.gethostname(), TAG_PID: str(os.getpid())}
    tags.update(_source_tags(source or stage))
    if description:
        tags[TAG_DESCRIPTION] = description
    if study is not None and parent is not None:
        tags.update({TAG_STUDY: study.key, TAG_PARENT: parent})
    run = client.create_run(experiment, tags=tags, run_name=stage)
    stage_run_ = StageRun(client, run.info.run_id, experiment, study, parent)
    try:
        stage_run_.log_params(run_params)
        yield stage_run_
    except BaseException:
        _terminate(client, RunStatus.FAILED, run.info.run_id, parent)
        raise
    _terminate(client, RunStatus.FINISHED, run.info.run_id, parent)


def _terminate(client: MlflowClient, status: int, *run_ids: str | None) -> None:
    for run_id in run_ids:
        if run_id is not None:
            client.set_terminated(run_id, RunStatus.to_string(status))
