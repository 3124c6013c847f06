"""One tiny study (prepare + train on synthetic faces) shared by the tests of every later stage."""

import runpy

import pytest
import yaml
from mlflow.tracking import MlflowClient

from facetraits.config import TrackingParams
from facetraits.tracking import TAG_STAGE
from tests.conftest import REPO

EXPLAIN = {
    "methods": ["gradcam", "guided_gradcam", "integrated_gradients", "gradient_shap"],
    "attributes": ["happy", "dominant"],
    "ig_steps": 4, "shap_samples": 2, "gallery_faces": 2, "mean_faces": 4, "score_faces": 3, "curve_steps": 4,
}  # fmt: skip


def stage(name: str):
    """A stage script's main(), run in-process as DVC would run the file."""
    return runpy.run_path(str(REPO / "pipelines" / f"{name}.py"))["main"]


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("stage")
    store = tmp_path_factory.mktemp("store")
    tracking = TrackingParams(uri=f"sqlite:///{store / 'mlflow.db'}", experiment="train-stage", artifacts=str(store / "a"))
    params = {
        "data": {"image_size": 32, "attributes": ["happy", "dominant", "attractive"], "synthetic": {"n_faces": 40}},
        "model": {"head_hidden": 8},
        # 32-true: `auto` resolves by CPU (bf16 where it is native), and this tiny model's outputs move so little
        # under deletion that bf16 rounding decides whether a curve is defined: every host reads the same numbers.
        "train": {"max_epochs": 2, "batch_size": 16, "progress_bar": False, "patience": 5, "precision": "32-true"},
        "tracking": {
            "uri": tracking.uri, "experiment": tracking.experiment, "artifacts": tracking.artifacts, "system_metrics_s": 0.5
        },
        "explain": EXPLAIN,
        "baselines": {"reliability_repeats": 5, "handcrafted": {"c_grid": [1.0, 10.0]}},
        "variants": {"no_augment": {"train": {"augment": {"strength": 0.0}, "max_epochs": 1}}},
        "ensemble": {"members": ["main", "no_augment"], "weight_step": 0.25},
    }
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    paths = {"prepared": root / "prepared", "models": root / "models", "out": root / "results" / "train"}
    assert stage("prepare")(["--params", str(root / "params.yaml"), "--out", str(paths["prepared"]), "--summary", str(root / "p.json")]) == 0
    args = ["--params", str(root / "params.yaml")] + [x for k, v in paths.items() for x in (f"--{k}", str(v))]
    assert stage("train")(args) == 0
    study = {**paths, "root": root, "client": MlflowClient(tracking.uri), "tracking": tracking}
    return {**study, "run": _stage_run(study, "train")}




@pytest.fixture(scope="session")
def ensembled(trained) -> dict:
    """The tiny study's variant trained and the ensemble stage run on it and the main model."""
    root, results = trained["root"], trained["root"] / "results"
    variant_args = ["--variant", "no_augment", "--models", str(root / "variants" / "no_augment" / "models")]
    assert stage("train")([*stage_args(trained, "prepared"), *variant_args, "--out", str(results / "variants" / "no_augment")]) == 0
    paths = ["--results", str(results), "--variants", str(root / "variants"), "--out", str(results / "ensemble")]
    assert stage("ensemble")([*stage_args(trained, "prepared", "models"), *paths]) == 0
    return {**trained, "results": results, "variants": root / "variants"}


def stage_args(study: dict, *names: str) -> list[str]:
    """--params plus the named paths of the tiny study, as dvc.yaml passes them."""
    return ["--params", str(study["root"] / "params.yaml")] + [x for n in names for x in (f"--{n}", str(study[n]))]


@pytest.fixture(scope="session")
def explained(trained) -> dict:
    out = trained["root"] / "results" / "explain"
    assert stage("explain")([*stage_args(trained, "prepared", "models"), "--out", str(out)]) == 0
    return {**trained, "explain": out, "explain_run": _stage_run(trained, "explain")}


def _stage_run(study: dict, name: str):
    client = study["client"]
    experiment = client.get_experiment_by_name(study["tracking"].experiment)
    # the stage's finished run: tests of bad inputs leave FAILED runs of it in the same experiment
    finished = f"tags.`{TAG_STAGE}` = '{name}' and attributes.status = 'FINISHED'"
    (run,) = client.search_runs([experiment.experiment_id], filter_string=finished)
    return run
