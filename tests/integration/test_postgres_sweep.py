"""Sweep workers on a PostgreSQL study and stages tracked to an `mlflow server`, all read back from the servers."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from facetraits.sweep.outputs import read_best_params
from facetraits.sweep.study import ATTR_WORKER
from facetraits.sweep.trial_runs import TAG_PARENT, TAG_TRIAL
from facetraits.tracking import TAG_STAGE
from tests.integration.conftest import EXPERIMENT, JOINED_TRIALS, STAGE_TRIALS, ScaleOut, Servers

pytestmark = [pytest.mark.servers, pytest.mark.slow]


def _runs(servers: Servers, stage: str) -> list:
    client = MlflowClient(servers.tracking_uri)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    return client.search_runs([experiment.experiment_id], filter_string=f"tags.`{TAG_STAGE}` = '{stage}'")


def _trials(scale_out: ScaleOut, servers: Servers) -> dict[int, optuna.trial.FrozenTrial]:
    return {t.number: t for t in optuna.load_study(study_name=scale_out.study, storage=servers.storage).trials}


def test_every_trial_of_both_workers_and_the_joined_one_is_in_postgres(scale_out: ScaleOut, servers: Servers) -> None:
    trials = _trials(scale_out, servers)
    assert sorted(trials) == list(range(STAGE_TRIALS + JOINED_TRIALS))
    assert all(t.state.is_finished() for t in trials.values())
    stage_workers = {t.user_attrs[ATTR_WORKER] for n, t in trials.items() if n < STAGE_TRIALS}
    joined_workers = {t.user_attrs[ATTR_WORKER] for n, t in trials.items() if n >= STAGE_TRIALS}
    assert len(stage_workers) == 2 and len(joined_workers) == 1 and not stage_workers & joined_workers
    sweep = scale_out.project / "results" / "sweep"
    assert not (sweep / "optuna.db").exists(), "the stage used PostgreSQL, not its SQLite default"
    counted = servers.query("optuna", "SELECT count(*) FROM trials JOIN studies USING (study_id) WHERE study_name = %s",
                            (scale_out.study,))  # fmt: skip
    assert counted == [(STAGE_TRIALS + JOINED_TRIALS,)]
    table = pd.read_csv(sweep / "trials.csv").set_index("number").sort_index()
    assert list(table.index) == list(range(STAGE_TRIALS))
    assert [trials[n].state.name for n in table.index] == list(table["state"])


def test_trial_runs_of_every_worker_are_on_the_server(scale_out: ScaleOut, servers: Servers, tmp_path: Path) -> None:
    trials = _trials(scale_out, servers)
    children = _runs(servers, "sweep-trial")
    assert sorted(int(r.data.tags[TAG_TRIAL]) for r in children) == sorted(trials)
    for run in children:
        trial = trials[int(run.data.tags[TAG_TRIAL])]
        assert float(run.data.params["lr"]) == pytest.approx(trial.params["lr"])
        assert run.data.params["head"] == trial.params["head"]
        if trial.value is not None:
            assert run.data.metrics["objective"] == pytest.approx(trial.value)
    (parent,) = _runs(servers, "sweep")
    assert {r.data.tags[TAG_PARENT] for r in children} == {parent.info.run_id}
    assert parent.info.status == "FINISHED" and parent.data.metrics["sweep/n_trials"] == STAGE_TRIALS
    client = MlflowClient(servers.tracking_uri)
    downloaded = Path(client.download_artifacts(parent.info.run_id, "sweep/trials.csv", str(tmp_path)))
    assert downloaded.read_bytes() == (scale_out.project / "results" / "sweep" / "trials.csv").read_bytes()


def test_train_run_metrics_and_artifacts_read_back_through_the_server(
    scale_out: ScaleOut, servers: Servers, tmp_path: Path
) -> None:
    client = MlflowClient(servers.tracking_uri)
    (run,) = _runs(servers, "train")
    assert run.info.status == "FINISHED"
    local = scale_out.project / "results" / "train" / "metrics.json"
    assert run.data.metrics["test/pearson_mean"] == pytest.approx(json.loads(local.read_text())["test"]["pearson_mean"],
                                                                  abs=1e-5)  # fmt: skip
    assert len(client.get_metric_history(run.info.run_id, "val/pearson/happy")) == 1  # one epoch
    best = read_best_params(scale_out.project / "results" / "sweep" / "best_params.yaml")
    assert float(run.data.params["train.lr"]) == pytest.approx(best["train"]["lr"])
    logged = {a.path for a in client.list_artifacts(run.info.run_id, "train")}
    assert {"train/metrics.json", "train/predictions.csv"} <= logged
    (output,) = run.outputs.model_outputs  # the model is a LoggedModel of the run, its files on the server
    assert "MLmodel" in {a.path for a in client.list_logged_model_artifacts(output.model_id)}
    downloaded = Path(client.download_artifacts(run.info.run_id, "train/metrics.json", str(tmp_path)))
    assert downloaded.read_bytes() == local.read_bytes()
    # proxied: the stage uploaded over HTTP and the server wrote the file into its own artifact root
    assert client.get_experiment(run.info.experiment_id).artifact_location.startswith("mlflow-artifacts:")
    (stored,) = (servers.state / "mlartifacts").glob(f"*/{run.info.run_id}/artifacts/train/metrics.json")
    assert stored.read_bytes() == local.read_bytes()
    assert servers.query("mlflow", "SELECT status FROM runs WHERE run_uuid = %s", (run.info.run_id,)) == [("FINISHED",)]
