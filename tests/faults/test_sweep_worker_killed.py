"""A sweep worker SIGKILLed mid-trial: the next worker fails the trial by heartbeat, retries it, and ends the study."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pandas as pd
import pytest
import yaml
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from facetraits.config import TrackingParams
from facetraits.data.prepare import prepare_dataset
from facetraits.tracking import TAG_STAGE
from tests.conftest import REPO, study_params

pytestmark = pytest.mark.slow

N_TRIALS = 3
HEARTBEAT_S = 1
# a running trial with at least one reported epoch: the worker is inside the objective
MID_TRIAL = """
SELECT t.number FROM trials t
WHERE t.state = 'RUNNING' AND EXISTS (SELECT 1 FROM trial_intermediate_values v WHERE v.trial_id = t.trial_id)
"""


def _running_trial(database: Path) -> int | None:
    """Read the worker's SQLite storage without writing to it (opening it through Optuna would create tables)."""
    if not database.is_file():
        return None
    try:
        with sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=1) as connection:
            row = connection.execute(MID_TRIAL).fetchone()
    except sqlite3.OperationalError:  # tables not created yet, or the worker holds the write lock
        return None
    return None if row is None else int(row[0])


def _kill_mid_trial(command: list[str], cwd: Path, database: Path, log: Path) -> int:
    with open(log, "w") as out:
        process = subprocess.Popen(command, cwd=cwd, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 300
    try:
        while (number := _running_trial(database)) is None:
            assert process.poll() is None, (
                f"the sweep exited ({process.returncode}) before a trial ran:\n{log.read_text()}"
            )
            assert time.monotonic() < deadline, f"no running trial after 300 s:\n{log.read_text()}"
            time.sleep(0.05)
    finally:
        process.kill()  # SIGKILL; a no-op if it already exited
        process.wait()
    assert process.returncode == -signal.SIGKILL
    return number


def _sweep_runs(tracking: TrackingParams) -> list:
    client = MlflowClient(tracking.uri)
    experiment = client.get_experiment_by_name(tracking.experiment)
    runs = client.search_runs([experiment.experiment_id], filter_string=f"tags.`{TAG_STAGE}` = 'sweep'")
    return sorted(runs, key=lambda run: run.info.start_time)


@pytest.fixture(scope="module")
def killed_then_rerun(tmp_path_factory: pytest.TempPathFactory, tracking_store: Path) -> dict:
    """Run the sweep stage, SIGKILL it inside a trial, wait out the heartbeat grace period, run it again."""
    root = tmp_path_factory.mktemp("sweep-killed")
    tracking = TrackingParams(
        uri=f"sqlite:///{tracking_store / 'mlflow.db'}",
        experiment="faults-sweep-killed",
        artifacts=str(root / "artifacts"),
    )
    prepare_dataset(
        study_params(data={"image_size": 32, "synthetic": {"n_faces": 48}}).data, root / "prepared", progress=False
    )
    params = {
        "model": {"head_hidden": 8, "trainable_blocks": 0},
        "train": {"batch_size": 16, "progress_bar": False},
        "sweep": {
            "n_trials": N_TRIALS, "workers": 1, "pruner": "none", "max_epochs": 8, "heartbeat_s": HEARTBEAT_S,
            "max_retry": 1, "space": {"lr": {"low": 1e-4, "high": 1e-2, "log": True}, "head": {"choices": ["linear", "mlp"]}},
        },
        "tracking": {"uri": tracking.uri, "experiment": tracking.experiment, "artifacts": tracking.artifacts},
    }  # fmt: skip
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    out = root / "sweep"
    command = [
        sys.executable, str(REPO / "pipelines" / "sweep.py"), "--params", str(root / "params.yaml"),
        "--prepared", str(root / "prepared"), "--out", str(out),
    ]  # fmt: skip
    storage = f"sqlite:///{out / 'optuna.db'}"

    killed_trial = _kill_mid_trial(command, root, out / "optuna.db", root / "killed.log")
    killed_at = time.monotonic()
    state_after_kill = optuna.load_study(study_name=None, storage=storage).trials[killed_trial].state
    time.sleep(max(0.0, killed_at + 2 * HEARTBEAT_S + 0.5 - time.monotonic()))  # past the grace period: stale
    rerun = subprocess.run(command, cwd=root, check=False, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    return {
        "killed_trial": killed_trial,
        "state_after_kill": state_after_kill,
        "trials": optuna.load_study(study_name=None, storage=storage).trials,
        "table": pd.read_csv(out / "trials.csv"),
        "runs": _sweep_runs(tracking),
    }


def test_killed_trial_is_failed_by_heartbeat_and_retried_to_the_trial_count(killed_then_rerun: dict) -> None:
    trials, number = killed_then_rerun["trials"], killed_then_rerun["killed_trial"]
    assert killed_then_rerun["state_after_kill"] == TrialState.RUNNING
    stale = trials[number]
    assert stale.state == TrialState.FAIL
    (retry,) = [t for t in trials if t.system_attrs.get("failed_trial") == number]
    assert retry.state == TrialState.COMPLETE and retry.params == stale.params
    assert [t.state for t in trials].count(TrialState.COMPLETE) == N_TRIALS
    assert all(t.state.is_finished() for t in trials), "no trial is left RUNNING or WAITING"
    assert sorted(killed_then_rerun["table"]["number"]) == [t.number for t in trials]
    killed, rerun = killed_then_rerun["runs"]
    assert killed.info.status == "KILLED" and rerun.info.status == "FINISHED"


def test_a_rerun_samples_new_parameters(killed_then_rerun: dict) -> None:
    sampled = [t for t in killed_then_rerun["trials"] if "failed_trial" not in t.system_attrs]
    drawn = [tuple(sorted(t.params.items())) for t in sampled]
    assert len(set(drawn)) == len(drawn), f"repeated draws: {drawn}"
