"""One nested MLflow run per Optuna trial, under the sweep's parent run."""

from __future__ import annotations

from mlflow.entities import Metric, Param, RunStatus
from mlflow.tracking import MlflowClient
from optuna.trial import FrozenTrial, TrialState

from facetraits.config import TrackingParams
from facetraits.tracking import TAG_STAGE

TAG_PARENT = "mlflow.parentRunId"
TAG_STUDY = "optuna.study"
TAG_TRIAL = "optuna.trial_number"
TAG_STATE = "optuna.state"
TAG_FAIL_REASON = "optuna.fail_reason"
_STATUS = {TrialState.COMPLETE: RunStatus.FINISHED, TrialState.PRUNED: RunStatus.KILLED}


def log_trial_run(tracking: TrackingParams, parent_run_id: str, study: str, trial: FrozenTrial) -> str:
    """Params, per-epoch intermediate values, the final value and the state (with the failure reason)."""
    client = MlflowClient(tracking.uri)
    parent = client.get_run(parent_run_id)
    tags = {
        TAG_PARENT: parent_run_id,
        TAG_STAGE: "sweep-trial",
        TAG_STUDY: study,
        TAG_TRIAL: str(trial.number),
        TAG_STATE: trial.state.name,
        **{f"optuna.{k}": str(v)[:4000] for k, v in trial.user_attrs.items()},
    }
    if trial.state == TrialState.FAIL and TAG_FAIL_REASON not in tags:
        tags[TAG_FAIL_REASON] = "no result: its worker stopped (failed by heartbeat)"
    run = client.create_run(parent.info.experiment_id, tags=tags, run_name=f"trial-{trial.number}")
    timestamp = int((trial.datetime_complete or trial.datetime_start).timestamp() * 1000) if trial.datetime_start else 0
    metrics = [Metric("val/pearson_mean", float(v), timestamp, int(step)) for step, v in trial.intermediate_values.items()]
    if trial.value is not None:
        metrics.append(Metric("objective", float(trial.value), timestamp, 0))
    client.log_batch(run.info.run_id, metrics=metrics, params=[Param(k, str(v)) for k, v in trial.params.items()])
    client.set_terminated(run.info.run_id, RunStatus.to_string(_STATUS.get(trial.state, RunStatus.FAILED)))
    return run.info.run_id


def missing_trial_runs(tracking: TrackingParams, parent_run_id: str, trials: list[FrozenTrial]) -> list[FrozenTrial]:
    """Finished trials with no child run yet (their worker died before it could log them)."""
    client = MlflowClient(tracking.uri)
    parent = client.get_run(parent_run_id)
    children = client.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.`{TAG_PARENT}` = '{parent_run_id}'", max_results=50_000
    )
    logged = {run.data.tags.get(TAG_TRIAL) for run in children}
    return [t for t in trials if str(t.number) not in logged]


def log_missing_trial_runs(tracking: TrackingParams, parent_run_id: str, study: str, trials: list[FrozenTrial]) -> None:
    """A child run for every finished trial that has none: a killed worker's trials still show in MLflow."""
    finished = [trial for trial in trials if trial.state.is_finished()]
    for trial in missing_trial_runs(tracking, parent_run_id, finished):
        log_trial_run(tracking, parent_run_id, study, trial)
