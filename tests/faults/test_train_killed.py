"""`pipelines/train.py` SIGKILLed mid-epoch: nothing half-written, the rerun resumes from last.ckpt, the run is closed."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient

from facetraits.config import TrackingParams
from facetraits.data.prepare import prepare_dataset
from facetraits.tracking import TAG_STAGE
from tests.conftest import REPO, study_params
from tests.dvc_project import snapshot, temporary_leftovers

pytestmark = pytest.mark.slow

MAX_EPOCHS = 5
MODEL_FILES = {"best.ckpt", "last.ckpt", "train_state.json"}
PREVIOUS_OUTPUTS = {
    "metrics.json": '{"from": "the previous complete run"}\n',
    "history.csv": "epoch,train_loss,val_loss,val_pearson_mean\n0,1.0,1.0,0.1\n",
    "predictions.csv": "id,split,attribute,human,predicted\n",
    "figures/learning_curves.png": "previous figure",
}


def _train_runs(tracking: TrackingParams) -> list:
    client = MlflowClient(tracking.uri)
    experiment = client.get_experiment_by_name(tracking.experiment)
    runs = client.search_runs([experiment.experiment_id], filter_string=f"tags.`{TAG_STAGE}` = 'train'")
    return sorted(runs, key=lambda run: run.info.start_time)


def _kill_after_first_checkpoint(command: list[str], cwd: Path, last: Path, log: Path) -> None:
    """Start training, wait for epoch 0's last.ckpt (epoch 1 then starts at once), and SIGKILL it inside epoch 1."""
    with open(log, "w") as out:
        process = subprocess.Popen(command, cwd=cwd, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 300
    try:
        while not last.is_file():
            assert process.poll() is None, (
                f"train exited ({process.returncode}) before writing last.ckpt:\n{log.read_text()}"
            )
            assert time.monotonic() < deadline, f"no last.ckpt after 300 s:\n{log.read_text()}"
            time.sleep(0.05)
        time.sleep(0.3)
    finally:
        process.kill()  # SIGKILL; a no-op if it already exited
        process.wait()
    assert process.returncode == -signal.SIGKILL


def test_killed_training_resumes_and_leaves_no_partial_output(tmp_path: Path, tracking: TrackingParams) -> None:
    prepare_dataset(
        study_params(data={"image_size": 32, "attributes": ["happy", "dominant"], "synthetic": {"n_faces": 32}}).data,
        tmp_path / "prepared",
        progress=False,
    )
    params = {
        "model": {"head_hidden": 8, "trainable_blocks": 1},
        "train": {"max_epochs": MAX_EPOCHS, "batch_size": 8, "patience": MAX_EPOCHS, "progress_bar": False},
        "tracking": {"uri": tracking.uri, "experiment": tracking.experiment, "artifacts": tracking.artifacts},
    }
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    models, results = tmp_path / "models", tmp_path / "results"
    for name, text in PREVIOUS_OUTPUTS.items():
        (results / name).parent.mkdir(parents=True, exist_ok=True)
        (results / name).write_text(text)
    previous = snapshot(results, ".")
    command = [
        sys.executable, str(REPO / "pipelines" / "train.py"), "--params", str(tmp_path / "params.yaml"),
        "--prepared", str(tmp_path / "prepared"), "--models", str(models), "--out", str(results),
    ]  # fmt: skip

    _kill_after_first_checkpoint(command, tmp_path, models / "last.ckpt", tmp_path / "killed.log")
    checkpointed = int(torch.load(models / "last.ckpt", map_location="cpu", weights_only=True)["epoch"])
    assert checkpointed < MAX_EPOCHS - 1, "killed too late: training had already finished its last epoch"
    assert snapshot(results, ".") == previous, "a killed run must leave the previous outputs untouched"
    assert {p.name for p in models.iterdir()} == MODEL_FILES and not temporary_leftovers(results, models)
    torch.load(models / "best.ckpt", map_location="cpu", weights_only=True)
    assert json.loads((models / "train_state.json").read_text())["complete"] is False
    (killed,) = _train_runs(tracking)
    assert killed.info.status == "RUNNING"

    rerun = subprocess.run(command, cwd=tmp_path, check=False, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert f"Restored all states from the checkpoint at {models / 'last.ckpt'}" in rerun.stdout + rerun.stderr

    killed, resumed = _train_runs(tracking)
    assert killed.info.status == "KILLED" and resumed.info.status == "FINISHED"
    client = MlflowClient(tracking.uri)
    killed_curve = [
        m.value for m in sorted(client.get_metric_history(killed.info.run_id, "val/pearson_mean"), key=lambda m: m.step)
    ]
    resumed_curve = client.get_metric_history(resumed.info.run_id, "val/pearson_mean")
    assert len(resumed_curve) == MAX_EPOCHS - 1 - checkpointed, "the rerun trains only the epochs after the checkpoint"
    history = pd.read_csv(results / "history.csv")
    assert list(history["epoch"]) == list(range(MAX_EPOCHS)), "the checkpoint carries the earlier epochs' history"
    assert history["val_pearson_mean"][: checkpointed + 1].tolist() == pytest.approx(
        killed_curve[: checkpointed + 1], rel=1e-6
    )
    assert json.loads((results / "metrics.json").read_text())["epochs"] == {"all": MAX_EPOCHS}
    assert not temporary_leftovers(results, models)
    assert json.loads((models / "train_state.json").read_text())["complete"] is True
