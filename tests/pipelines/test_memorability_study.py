"""Memorability next to the traits (issue 27 item 4): the 10k US Adult Faces layout with its memorability workbook,
through prepare, train, baselines, explain, manifold and report, as the worked example in docs/memorability.md."""

import json

import numpy as np
import pytest
import yaml

from facetraits.baselines.reliability import SPLIT_HALVES_FILE, split_half_reliability
from facetraits.data.prepared import load_prepared
from tests.fixtures.layouts import make_us10k, make_us10k_memorability
from tests.pipelines.conftest import stage
from tests.pipelines.test_report_stage import _markdown_table

pytestmark = pytest.mark.slow

TRAITS = ("happy", "trustworthy", "attractive", "friendly", "unhappy")  # ten pairs or more: the manifold stage compares correlation matrices
MAIN = "VGG16-BN"


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("memorability")
    faces = make_us10k(root / "us10k", n_faces=48, attributes=TRAITS)
    memory = make_us10k_memorability(root / "us10k", faces.ids, missing=3, trials=(40, 60))
    params = {
        "data": {"source": "us10k", "path": str(root / "us10k"), "image_size": 32, "us10k": {"memorability": "hit_rate"}},
        "model": {"head_hidden": 8},
        "train": {"max_epochs": 1, "batch_size": 16, "progress_bar": False, "precision": "32-true"},
        "tracking": {"uri": f"sqlite:///{root / 'mlflow.db'}", "experiment": "memorability", "artifacts": str(root / "a")},
        "explain": {
            "methods": ["gradcam"], "attributes": ["memorability", "happy"], "gallery_faces": 2, "mean_faces": 4,
            "score_faces": 3, "curve_steps": 4,
        },  # fmt: skip
        "baselines": {"reliability_repeats": 5, "handcrafted": {"c_grid": [1.0]}},
        "manifold": {"methods": ["pca"], "dims": [2], "permutations": 19},
        "report": {"bootstrap_resamples": 500},
        "variants": {"no_augment": {"train": {"augment": {"strength": 0.0}}}},  # the report compares at least two
    }
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    p = ["--params", str(root / "params.yaml")]
    prepared, models, results = root / "prepared", root / "models", root / "results"
    assert stage("prepare")([*p, "--out", str(prepared), "--summary", str(root / "prepare.json")]) == 0
    assert stage("train")([*p, "--prepared", str(prepared), "--models", str(models), "--out", str(results / "train")]) == 0
    variant = ["--variant", "no_augment", "--models", str(root / "variant"), "--out", str(results / "variants" / "no_augment")]
    assert stage("train")([*p, "--prepared", str(prepared), *variant]) == 0
    assert stage("baselines")([*p, "--prepared", str(prepared), "--out", str(results / "baselines")]) == 0
    explain = ["--models", str(models), "--out", str(results / "explain")]
    assert stage("explain")([*p, "--prepared", str(prepared), *explain]) == 0
    manifold = ["--train", str(results / "train"), "--out", str(results / "manifold")]
    assert stage("manifold")([*p, "--prepared", str(prepared), *manifold]) == 0
    assert stage("report")([*p, "--prepared", str(prepared), "--results", str(results)]) == 0
    return {"faces": faces, "memory": memory, "prepared": prepared, "results": results}


def test_memorability_is_trained_and_scored_next_to_the_traits(study) -> None:
    data = load_prepared(study["prepared"])
    assert data.attributes == (*study["faces"].attributes, "memorability")
    assert data.faces["memorability"].isna().sum() == 3  # the faces with traits but no memorability row
    metrics = json.loads((study["results"] / "train" / "metrics.json").read_text())
    assert set(metrics["test"]["pearson"]) == set(data.attributes)
    assert -1 <= metrics["test"]["pearson"]["memorability"] <= 1
    scores = json.loads((study["results"] / "explain" / "scores.json").read_text())
    assert "memorability" in scores["attributes"]
    assert list((study["results"] / "explain" / "memorability").glob("*/gallery.png"))


def test_the_memorability_ceiling_is_the_split_half_consistency_of_its_trials(study) -> None:
    data = load_prepared(study["prepared"])
    baselines = json.loads((study["results"] / "baselines" / "metrics.json").read_text())["human"]
    expected = split_half_reliability(data.ratings(), data.attributes, repeats=5, seed=42).loc["memorability"]
    assert baselines["ceiling"]["memorability"] == pytest.approx(expected["ceiling"], abs=1e-6)  # metrics.json: 6 decimals
    # the simulation's hit rates vary far more than 40-60 trials' binomial noise: a high, finite ceiling
    assert baselines["ceiling"]["memorability"] == pytest.approx(np.sqrt(study["memory"].expected_reliability), abs=0.08)
    halves = np.load(study["results"] / "baselines" / SPLIT_HALVES_FILE)
    assert halves.shape == (5, 2, len(data.faces), len(data.attributes))
    missing = data.faces["memorability"].isna().to_numpy()
    assert np.isnan(halves[:, :, missing, -1]).all() and not np.isnan(halves[:, :, ~missing, -1]).any()


def test_the_report_shows_memorability_r_against_its_resampled_ceiling(study) -> None:
    results = study["results"]
    markdown = (results / "report.md").read_text()
    table = _markdown_table(markdown)
    baselines = json.loads((results / "baselines" / "metrics.json").read_text())["human"]
    r = json.loads((results / "train" / "metrics.json").read_text())["test"]["pearson"]["memorability"]
    row = table.loc["memorability"]
    assert row["human ceiling"] == pytest.approx(baselines["ceiling"]["memorability"], abs=0.006)
    assert row[MAIN] == pytest.approx(r, abs=0.006)
    assert row[f"{MAIN} r/ceiling"] == pytest.approx(r / baselines["ceiling"]["memorability"], abs=0.006)
    assert "redraws the faces the ceiling comes from" in markdown
    intervals = (results / "report.md").read_text().split("\n| memorability |")[1].splitlines()[0]
    assert intervals.count("[") >= 2  # r and r/ceiling carry intervals
