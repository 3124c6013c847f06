"""What a researcher sees in the MLflow UI after one tiny `dvc repro`, read through the REST API the UI itself
calls, from an `mlflow server` on loopback over the study's own store."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import yaml

from tests.dvc_project import copy_project, dvc
from tests.pipelines.conftest import EXPLAIN

pytestmark = [pytest.mark.slow, pytest.mark.ui]

TINY_STUDY = {
    "data": {"image_size": 32, "attributes": ["happy", "dominant"], "workers": 1, "synthetic": {"n_faces": 40}},
    "model": {"backbone": "resnet18", "head_hidden": 8, "trainable_blocks": 1},
    "train": {"max_epochs": 2, "batch_size": 16, "patience": 5, "progress_bar": False, "accelerator": "cpu"},
    "sweep": {"n_trials": 0},
    "explain": {**EXPLAIN, "methods": ["gradcam", "integrated_gradients"], "attributes": ["happy"]},
    "manifold": {"methods": ["pca"], "dims": [2], "permutations": 9, "folds": 2, "knn_neighbors": 3},
    "baselines": {"reliability_repeats": 5, "handcrafted": {"c_grid": [1.0]}},
    "tracking": {"experiment": "ui-study", "system_metrics_s": 0.5},
}
VARIANTS = {"fast_lr": {"train": {"lr": 0.01, "max_epochs": 1}}}
STAGES = {"prepare", "train", "variant@fast_lr", "baselines", "explain", "manifold", "report"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny study reproduced: the folder holding its project and its MLflow store."""
    root = tmp_path_factory.mktemp("ui-study")
    project = copy_project(root / "project", TINY_STUDY, root)
    params = yaml.safe_load((project / "params.yaml").read_text())
    (project / "params.yaml").write_text(yaml.safe_dump({**params, "variants": VARIANTS}, sort_keys=False))
    repro = dvc(project, "repro", timeout=900)
    assert repro.returncode == 0, repro.stdout[-3000:] + repro.stderr[-3000:]
    return root


@pytest.fixture(scope="module")
def ui(study: Path) -> Iterator[str]:
    """`mlflow server` over the study's store: the UI's base URL."""
    root = study
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}", "--default-artifact-root", str(root / "artifacts")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if requests.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                time.sleep(1)
        else:
            pytest.fail("mlflow server did not answer /health within 120 s")
        yield url
    finally:
        server.terminate()
        server.wait(timeout=30)


def _api(url: str, path: str, method: str = "get", **body) -> dict:
    call = requests.post if method == "post" else requests.get
    response = call(f"{url}/api/2.0/mlflow/{path}", **({"json": body} if method == "post" else {"params": body}), timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


def _runs(url: str) -> list[dict]:
    experiment = _api(url, "experiments/get-by-name", experiment_name="ui-study")["experiment"]["experiment_id"]
    runs = _api(url, "runs/search", "post", experiment_ids=[experiment], max_results=1000)["runs"]
    return [{**run, "__url": url} for run in runs]


def _tags(run: dict) -> dict[str, str]:
    return {tag["key"]: tag["value"] for tag in run["data"].get("tags", [])}


def _metrics(run: dict) -> dict[str, float]:
    return {metric["key"]: metric["value"] for metric in run["data"].get("metrics", [])}


def test_one_study_holds_every_stage_run_that_ran(ui: str) -> None:
    runs = _runs(ui)
    (study,) = [run for run in runs if _tags(run).get("facetraits.role") == "study"]
    assert study["info"]["run_name"].startswith("study repro · params ") and study["info"]["status"] == "FINISHED"
    children = [run for run in runs if _tags(run).get("mlflow.parentRunId") == study["info"]["run_id"]]
    assert {run["info"]["run_name"] for run in children} == STAGES, "sweep with no trials leaves no empty run"
    assert len(runs) == len(STAGES) + 1
    for run in children:
        tags = _tags(run)
        assert tags["mlflow.note.content"] and tags["mlflow.source.name"].startswith("pipelines/")
        assert run["info"]["status"] == "FINISHED"


def test_the_trained_model_is_logged_registered_and_aliased(ui: str) -> None:
    runs = {run["info"]["run_name"]: run for run in _runs(ui)}
    train = runs["train"]
    (output,) = train["outputs"]["model_outputs"]
    model = requests.get(f"{ui}/api/2.0/mlflow/logged-models/{output['model_id']}", timeout=30).json()["model"]
    assert model["info"]["source_run_id"] == train["info"]["run_id"] and model["info"]["status"] == "LOGGED_MODEL_READY"
    versions = _api(ui, "model-versions/search", filter="name='ui-study'")["model_versions"]
    assert {v["run_id"] for v in versions} == {train["info"]["run_id"], runs["variant@fast_lr"]["info"]["run_id"]}
    champion = _api(ui, "registered-models/alias", name="ui-study", alias="champion")["model_version"]
    best = max(("train", "variant@fast_lr"), key=lambda name: float(_tags_of_version(versions, runs[name])))
    assert champion["run_id"] == runs[best]["info"]["run_id"], "the alias names the study's best model by val r"


def _tags_of_version(versions: list[dict], run: dict) -> str:
    (version,) = [v for v in versions if v["run_id"] == run["info"]["run_id"]]
    tags = {tag["key"]: tag["value"] for tag in version["tags"]}
    assert float(tags["val_pearson_mean"]) == pytest.approx(max(_history(run, "val/pearson_mean")), abs=1e-5)
    return tags["val_pearson_mean"]


def _history(run: dict, key: str) -> list[float]:
    url = run["__url"]
    return [m["value"] for m in _api(url, "metrics/get-history", run_id=run["info"]["run_id"], metric_key=key)["metrics"]]


def test_the_prepared_data_is_an_input_of_every_stage_that_reads_it(ui: str) -> None:
    runs = {run["info"]["run_name"]: run for run in _runs(ui)}
    digests = set()
    for name in STAGES - {"prepare"}:
        (dataset,) = runs[name]["inputs"]["dataset_inputs"]
        assert dataset["dataset"]["name"] == "prepared"
        digests.add(dataset["dataset"]["digest"])
    assert len(digests) == 1 and _tags(runs["prepare"])["facetraits.data_fingerprint"].startswith(digests.pop())


def test_every_method_scores_each_attribute_under_one_key(ui: str) -> None:
    """The compare view charts test/pearson/happy for the main model, the variant and the hand-crafted model."""
    runs = {run["info"]["run_name"]: run for run in _runs(ui)}
    for name in ("train", "variant@fast_lr", "baselines"):
        metrics = _metrics(runs[name])
        assert -1 <= metrics["test/pearson/happy"] <= 1 and "test/pearson_mean" in metrics, name
    history = _api(ui, "metrics/get-history", run_id=runs["train"]["info"]["run_id"], metric_key="val/pearson/happy")
    assert [point["step"] for point in history["metrics"]] == [0, 1], "per-epoch values stepped by epoch"
    explain = _metrics(runs["explain"])
    # per method: each score's mean with its interval bounds, the randomization test, maps per second
    per_method = {key.split("/")[1] for key in explain}
    assert len(explain) <= 20 * len(per_method) and all(key.count("/") == 2 for key in explain), "no flood"
    assert any(key.endswith("_ci_low") for key in explain), "interval bounds are charted (where a score is defined)"
    report = _metrics(runs["report"])
    assert report and all(" " not in key for key in report)


def test_the_experiment_opens_on_its_model_training_view(ui: str) -> None:
    experiment = _api(ui, "experiments/get-by-name", experiment_name="ui-study")["experiment"]
    tags = {tag["key"]: tag["value"] for tag in experiment["tags"]}
    assert tags["mlflow.experimentKind"] == "custom_model_development", "else the UI shows GenAI pages"


def test_the_study_run_shows_the_headline_and_what_was_studied(ui: str, study: Path) -> None:
    (parent,) = [run for run in _runs(ui) if _tags(run).get("facetraits.role") == "study"]
    report = json.loads((study / "project" / "results" / "report.json").read_text())
    assert set(report["test_r_mean"]) == {"main", "fast_lr", "handcrafted", "human_ceiling"}
    expected = {
        f"{section}/{key}": value
        for section in ("test_r_mean", "test_r_mean_ci_low", "test_r_mean_ci_high")
        for key, value in report[section].items()
    }  # the headline and its intervals (the ceiling has none)
    assert _metrics(parent) == pytest.approx(expected)
    params = {param["key"]: param["value"] for param in parent["data"]["params"]}
    assert params["model.backbone"] == "resnet18" and params["data.image_size"] == "32"
    assert (params["faces"], params["attributes"], params["variants"]) == ("40", "2", "fast_lr")
    assert params["data.source"] == "synthetic" and params["train.max_epochs"] == "2"


def test_each_model_is_named_by_its_method_and_links_its_registered_version(ui: str) -> None:
    runs = {run["info"]["run_name"]: run for run in _runs(ui)}
    versions = _api(ui, "model-versions/search", filter="name='ui-study'")["model_versions"]
    for stage, name in (("train", "main"), ("variant@fast_lr", "fast_lr")):
        (output,) = runs[stage]["outputs"]["model_outputs"]
        model = requests.get(f"{ui}/api/2.0/mlflow/logged-models/{output['model_id']}", timeout=30).json()["model"]
        assert model["info"]["name"] == name
        (version,) = [v for v in versions if v["run_id"] == runs[stage]["info"]["run_id"]]
        assert version["source"] == f"models:/{output['model_id']}"
        tags = {tag["key"]: tag["value"] for tag in model["info"]["tags"]}
        linked = json.loads(tags["mlflow.modelVersions"])  # what the model's page reads for "Registered versions"
        assert [(v["name"], str(v["version"])) for v in linked] == [("ui-study", str(version["version"]))]


def test_the_report_shows_its_figures_inside_the_artifact_viewer(ui: str) -> None:
    """The viewer serves report.html alone: every figure must be inside it, and nothing may point elsewhere."""
    runs = {run["info"]["run_name"]: run for run in _runs(ui)}
    response = requests.get(
        f"{ui}/get-artifact", params={"path": "report/report.html", "run_uuid": runs["report"]["info"]["run_id"]},
        timeout=30,
    )  # fmt: skip
    assert response.status_code == 200, response.text[:500]
    html = response.text
    sources = re.findall(r'<img src="([^"]*)"', html)
    assert len(sources) >= 3 and all(src.startswith("data:image/") for src in sources)
    assert not re.findall(r'(?:src|href)="(?!data:)', html)
    assert len(response.content) < 5_000_000
