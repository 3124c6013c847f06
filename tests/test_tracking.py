import os
import socket
import time
from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from facetraits.config import StudyParams, TrackingParams
from facetraits.errors import ConfigError
from facetraits.tracking import TAG_GIT_COMMIT, TAG_HOST, TAG_PID, TAG_STAGE, flatten_params, git_commit, stage_run


def test_flatten_params_uses_dotted_yaml_keys() -> None:
    flat = flatten_params(StudyParams())
    assert flat["data.image_size"] == "64"
    assert flat["data.split.train"] == "0.64"
    assert flat["data.csv.rating_range"] == "[1.0, 9.0]"
    assert flat["tracking.uri"] == "sqlite:///mlflow.db"


def test_stage_run_logs_params_metrics_image_and_closes(tracking: TrackingParams, tmp_path: Path) -> None:
    with stage_run(tracking, "prepare", {"data.image_size": "32"}) as run:
        run.log_metrics({"data/n_faces": 12, "data/mean/happy": 5.5})
        run.log_image(np.zeros((8, 8, 3), dtype=np.uint8), "prepare/gallery.png")
    client = MlflowClient(tracking.uri)
    logged = client.get_run(run.run_id)
    assert logged.info.status == "FINISHED"
    assert logged.data.params == {"data.image_size": "32"}
    assert logged.data.metrics == {"data/n_faces": 12.0, "data/mean/happy": 5.5}
    assert logged.data.tags[TAG_STAGE] == "prepare"
    assert logged.data.tags.get(TAG_GIT_COMMIT) == git_commit()
    assert [a.path for a in client.list_artifacts(run.run_id, "prepare")] == ["prepare/gallery.png"]
    assert client.get_experiment_by_name(tracking.experiment).artifact_location.startswith("file://")


def test_failing_stage_marks_the_run_failed(tracking: TrackingParams) -> None:
    with pytest.raises(RuntimeError):
        with stage_run(tracking, "prepare", {}) as run:
            raise RuntimeError("boom")
    assert MlflowClient(tracking.uri).get_run(run.run_id).info.status == "FAILED"


def test_unreachable_server_fails_fast_naming_the_uri() -> None:
    params = TrackingParams(uri="http://127.0.0.1:9", connect_timeout_s=2)
    started = time.monotonic()
    with pytest.raises(ConfigError, match=r"tracking.uri: MLflow server http://127.0.0.1:9 is unreachable"):
        with stage_run(params, "prepare", {}):
            pass
    assert time.monotonic() - started < 10


def test_a_run_whose_process_died_is_closed_by_the_next_run(tracking: TrackingParams) -> None:
    """What a SIGKILLed stage leaves behind: a RUNNING run; the next invocation marks it KILLED."""
    import subprocess
    import sys

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    client = MlflowClient(tracking.uri)
    with stage_run(tracking, "train", {}) as first:
        pass
    orphan = client.create_run(
        client.get_run(first.run_id).info.experiment_id,
        tags={TAG_STAGE: "train", TAG_HOST: socket.gethostname(), TAG_PID: dead.stdout.strip()},
    )
    alive = client.create_run(
        client.get_run(first.run_id).info.experiment_id,
        tags={TAG_STAGE: "train", TAG_HOST: socket.gethostname(), TAG_PID: str(os.getpid())},
    )
    with stage_run(tracking, "train", {}):
        pass
    assert client.get_run(orphan.info.run_id).info.status == "KILLED"
    assert client.get_run(alive.info.run_id).info.status == "RUNNING", "a live process's run is left alone"


def test_metric_name_keeps_labels_readable_within_mlflow_rules() -> None:
    from facetraits.tracking import metric_name

    assert metric_name("Hand-crafted (colour + LBP + HOG, SVR)") == "Hand-crafted colour LBP HOG SVR"
    assert metric_name("VGG16-BN, no_augment") == "VGG16-BN no_augment"
    assert metric_name("report/mean_r/ViT-B/16") == "report/mean_r/ViT-B/16"
