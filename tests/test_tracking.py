import dataclasses
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from facetraits.config import StudyParams, TrackingParams
from facetraits.errors import ConfigError
from facetraits.tracking import (
    MODEL_TRAINING,
    TAG_EXPERIMENT_KIND,
    TAG_GIT_COMMIT,
    TAG_HOST,
    TAG_PID,
    TAG_STAGE,
    Study,
    experiment_page,
    flatten_params,
    git_commit,
    stage_run,
)


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


def test_metric_key_is_a_lower_case_name_without_spaces() -> None:
    from facetraits.tracking import metric_key

    assert metric_key("Hand-crafted (colour + LBP + HOG, SVR)") == "hand_crafted_colour_lbp_hog_svr"
    assert metric_key("VGG16-BN, no_augment") == "vgg16_bn_no_augment"
    assert metric_key("MobileNetV2, imagenet_probe") == "mobilenetv2_imagenet_probe"


@pytest.fixture
def web_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A web server on 127.0.0.1 that is not MLflow: `python -m http.server` serving a folder."""
    root = tmp_path / "www"
    root.mkdir()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", str(root)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline, "http.server did not start"
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}", root
    finally:
        server.kill()
        server.wait()


@pytest.mark.parametrize("answers_health", [False, True], ids=["no-health", "health-only"])
def test_a_web_server_that_is_not_mlflow_is_named(web_server: tuple[str, Path], answers_health: bool) -> None:
    uri, root = web_server
    if answers_health:  # answers MLflow's /health, but none of its API
        (root / "health").write_text("OK")
    reason = (
        "is not a usable MLflow tracking store: API request to endpoint /api/2.0/mlflow/experiments/get-by-name "
        "failed with error code 404 != 200."
        if answers_health
        else "answers but is not an MLflow server (GET /health: HTTP 404)"
    )
    with pytest.raises(ConfigError, match=rf"^{re.escape(f'tracking.uri: {uri} {reason}')}$"):
        with stage_run(TrackingParams(uri=uri, connect_timeout_s=5), "prepare", {}):
            pytest.fail("the stage must not start")


def test_a_corrupt_mlflow_db_is_named_and_left_as_it_was(tmp_path: Path) -> None:
    store = tmp_path / "mlflow.db"
    content = b"not an SQLite database\n" * 64
    store.write_bytes(content)
    uri = f"sqlite:///{store}"
    message = f"tracking.uri: {uri} is not a usable MLflow tracking store: file is not a database"
    with pytest.raises(ConfigError, match=rf"^{re.escape(message)}$"):
        with stage_run(TrackingParams(uri=uri), "prepare", {}):
            pytest.fail("the stage must not start")
    assert store.read_bytes() == content


@pytest.mark.parametrize(
    ("cmdline", "subcommand"),
    [
        (["/venv/bin/python", "/venv/bin/dvc", "repro"], "repro"),
        (["python", "-m", "dvc", "exp", "run", "-S", "train.lr=0.1"], "exp"),
        (["dvc", "exp", "exec-run", "--infofile", "x.run"], "exp"),
        (["/venv/bin/dvc", "--quiet", "repro", "train"], "repro"),
        (["/venv/bin/dvc", "status"], None),
        (["python", "pipelines/train.py", "--params", "dvc"], None),
        (["/bin/sh", "-c", "python pipelines/train.py"], None),
    ],
)
def test_a_dvc_launcher_is_recognised_by_its_command_line(cmdline: list[str], subcommand: str | None) -> None:
    from facetraits.tracking import _dvc_subcommand

    assert _dvc_subcommand(cmdline) == subcommand


def test_a_study_is_named_by_the_experiment_params_and_commit(tmp_path: Path, monkeypatch) -> None:
    from facetraits import tracking

    params = tmp_path / "params.yaml"
    params.write_text("train: {lr: 0.1}\n")
    monkeypatch.setattr(tracking, "dvc_launcher", lambda: (4242, 1_700_000_000.0))
    study = tracking.current_study(params, {"DVC_EXP_NAME": "bushy-oaks"})
    assert study.label.startswith("bushy-oaks · params ") and study.launcher_pid == 4242
    assert tracking.current_study(params, {}).label.startswith("repro · params ")
    assert study.key != tracking.current_study(params, {}).key, "an experiment and a repro are two studies"
    assert tracking.current_study(params, {"FACETRAITS_STUDY": "slurm-7"}) == tracking.Study("slurm-7", "slurm-7")
    monkeypatch.setattr(tracking, "dvc_launcher", lambda: None)
    assert tracking.current_study(params, {}) is None


def test_the_experiment_opens_on_model_training_in_the_ui(tracking: TrackingParams) -> None:
    """MLflow 3's UI shows an experiment without this tag as a GenAI one (traces, overview pop-ups)."""
    client = MlflowClient(tracking.uri)
    with stage_run(tracking, "prepare", {}):
        pass
    experiment = client.get_experiment_by_name(tracking.experiment)
    assert experiment.tags[TAG_EXPERIMENT_KIND] == MODEL_TRAINING == "custom_model_development"
    older = client.create_experiment(f"{tracking.experiment}-older")  # made before the tag existed
    with stage_run(dataclasses.replace(tracking, experiment=f"{tracking.experiment}-older"), "prepare", {}):
        pass
    assert client.get_experiment(older).tags[TAG_EXPERIMENT_KIND] == MODEL_TRAINING
    assert experiment_page("http://127.0.0.1:5000/", "7") == (
        "http://127.0.0.1:5000/#/experiments/7/runs?workflowType=machine_learning"
    )


def test_the_report_headline_lands_on_the_study_run(tracking: TrackingParams) -> None:
    client = MlflowClient(tracking.uri)
    study = Study("host:1:2.00:repro", "repro · test")
    with stage_run(tracking, "report", {}, study=study) as run:
        run.log_to_study({"test_r_mean/main": 0.7, "test_r_mean/human_ceiling": None}, {"model.backbone": "vgg16"})
    with stage_run(tracking, "report", {}, study=study) as again:  # the same study reported twice
        again.log_to_study({"test_r_mean/main": 0.8}, {"model.backbone": "resnet18", "faces": "40"})
    parent = client.get_run(run.parent_run_id)
    assert parent.info.run_id == again.parent_run_id and parent.data.tags["facetraits.role"] == "study"
    assert parent.data.metrics == {"test_r_mean/main": 0.8}, "a missing value is left out, the latest value shown"
    assert parent.data.params == {"model.backbone": "vgg16", "faces": "40"}, "params are immutable: the first stays"
    assert client.get_run(run.run_id).data.metrics == {}, "the stage run keeps its own metrics only"


def test_a_stage_run_by_hand_has_no_study_to_report_to(tracking: TrackingParams) -> None:
    with stage_run(tracking, "report", {}) as run:
        run.log_to_study({"test_r_mean/main": 0.7}, {"faces": "40"})
    assert run.parent_run_id is None
    runs = MlflowClient(tracking.uri).search_runs([run.experiment_id])
    assert [r.info.run_id for r in runs] == [run.run_id] and runs[0].data.metrics == {} and runs[0].data.params == {}
