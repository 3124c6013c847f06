"""The prepare stage script: outputs, metrics file and what reaches MLflow."""

import json
import runpy
from pathlib import Path

import yaml
from mlflow.tracking import MlflowClient

from facetraits.config import TrackingParams
from facetraits.tracking import TAG_FINGERPRINT, TAG_STAGE
from tests.conftest import REPO

main = runpy.run_path(str(REPO / "pipelines" / "prepare.py"))["main"]


def _write_params(path: Path, tracking: TrackingParams, data: dict) -> Path:
    params = {"data": data, "tracking": {"uri": tracking.uri, "experiment": tracking.experiment, "artifacts": tracking.artifacts}}
    path.write_text(yaml.safe_dump(params))
    return path


def test_stage_writes_outputs_and_logs_run(tmp_path: Path, tracking: TrackingParams) -> None:
    params = _write_params(tmp_path / "params.yaml", tracking, {"image_size": 32, "synthetic": {"n_faces": 24}})
    out, summary = tmp_path / "prepared", tmp_path / "results" / "prepare.json"
    assert main(["--params", str(params), "--out", str(out), "--summary", str(summary)]) == 0
    metrics = json.loads(summary.read_text())
    assert metrics["n_faces"] == 24 and sum(metrics["splits"].values()) == 24

    client = MlflowClient(tracking.uri)
    (run,) = client.search_runs([client.get_experiment_by_name(tracking.experiment).experiment_id])
    assert run.info.status == "FINISHED"
    assert run.data.tags[TAG_STAGE] == "prepare"
    assert run.data.tags[TAG_FINGERPRINT] == metrics["fingerprint"]
    assert run.data.params["data.image_size"] == "32"
    assert run.data.metrics["data/n_faces"] == 24
    assert run.data.metrics["data/mean/happy"] == metrics["attributes"]["happy"]["mean"]
    assert run.data.metrics["data/missing/happy"] == 0
    assert {a.path for a in client.list_artifacts(run.info.run_id, "prepare")} == {
        "prepare/gallery.png",
        "prepare/skipped.tsv",
    }


def test_bad_params_fail_cleanly_without_outputs(tmp_path: Path, tracking: TrackingParams, capsys) -> None:
    params = _write_params(tmp_path / "params.yaml", tracking, {"image_sise": 32})
    out = tmp_path / "prepared"
    assert main(["--params", str(params), "--out", str(out), "--summary", str(tmp_path / "s.json")]) == 1
    assert "data.image_sise: unknown key (did you mean 'image_size'?)" in capsys.readouterr().err
    assert not out.exists() and not (tmp_path / "s.json").exists()


def test_data_error_marks_the_run_failed(tmp_path: Path, tracking: TrackingParams, capsys) -> None:
    params = _write_params(tmp_path / "params.yaml", tracking, {"source": "omi", "path": str(tmp_path / "none")})
    assert main(["--params", str(params), "--out", str(tmp_path / "p"), "--summary", str(tmp_path / "s.json")]) == 1
    assert "is not a directory" in capsys.readouterr().err
    client = MlflowClient(tracking.uri)
    (run,) = client.search_runs([client.get_experiment_by_name(tracking.experiment).experiment_id])
    assert run.info.status == "FAILED"


def test_tracking_and_output_faults_fail_cleanly_keeping_previous_outputs(
    tmp_path: Path, tracking: TrackingParams, capsys
) -> None:
    """A corrupt mlflow.db and an output whose folder is a regular file (which blocks root too, unlike chmod)."""
    params = _write_params(tmp_path / "params.yaml", tracking, {"image_size": 32, "synthetic": {"n_faces": 24}})
    out, summary = tmp_path / "prepared", tmp_path / "results" / "prepare.json"
    assert main(["--params", str(params), "--out", str(out), "--summary", str(summary)]) == 0
    previous = {p: p.read_bytes() for p in [summary, *out.iterdir()]}
    capsys.readouterr()

    corrupt = tmp_path / "corrupt.db"
    corrupt.write_bytes(b"not an SQLite database\n" * 64)
    bad_store = {**yaml.safe_load(params.read_text()), "tracking": {"uri": f"sqlite:///{corrupt}"}}
    (tmp_path / "bad_store.yaml").write_text(yaml.safe_dump(bad_store))
    assert main(["--params", str(tmp_path / "bad_store.yaml"), "--out", str(out), "--summary", str(summary)]) == 1
    assert capsys.readouterr().err == (
        f"error: tracking.uri: sqlite:///{corrupt} is not a usable MLflow tracking store: file is not a database\n"
    )

    blocked = tmp_path / "a_file" / "prepared"
    (tmp_path / "a_file").write_text("not a folder")
    assert main(["--params", str(params), "--out", str(blocked), "--summary", str(summary)]) == 1
    assert capsys.readouterr().err == (
        f"error: {blocked}: cannot write this output: {tmp_path / 'a_file'} is a file, not a folder\n"
    )
    assert {p: p.read_bytes() for p in [summary, *out.iterdir()]} == previous
    assert not [p for p in tmp_path.rglob("*.tmp")]
