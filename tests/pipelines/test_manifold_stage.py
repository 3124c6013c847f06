"""The manifold stage on the tiny trained study: files for DVC, the MLflow run, the model's vectors, bad pairs."""

import json

import numpy as np
import pandas as pd
import pytest
import yaml

from facetraits.data.prepared import load_prepared
from facetraits.errors import DataError
from facetraits.manifold.correlations import attribute_correlations
from facetraits.manifold.study import mapped_rows, model_vectors, run_metrics
from facetraits.models.face_module import load_module
from facetraits.models.inference import backbone_features, predict_images
from facetraits.numbers import flat_metrics
from facetraits.tracking import TAG_FINGERPRINT, TAG_STAGE
from tests.pipelines.conftest import stage

pytestmark = pytest.mark.slow

# UMAP as in the defaults; t-SNE and 3-D maps are covered by tests/manifold/test_study.py on cheaper data.
MANIFOLD = {"methods": ["pca", "umap"], "dims": [2], "permutations": 99}
SOURCES = ("features", "predicted", "human")
ATTRIBUTES = ["happy", "dominant", "attractive"]


@pytest.fixture(scope="module")
def mapped(trained) -> dict:
    params = yaml.safe_load((trained["root"] / "params.yaml").read_text())
    params_file = trained["root"] / "params_manifold.yaml"
    params_file.write_text(yaml.safe_dump({**params, "manifold": MANIFOLD}))
    out = trained["root"] / "manifold"
    args = ["--params", str(params_file), "--prepared", str(trained["prepared"]), "--train", str(trained["out"])]
    assert stage("manifold")([*args, "--out", str(out)]) == 0
    client = trained["client"]
    experiment = client.get_experiment_by_name(trained["tracking"].experiment)
    (run,) = client.search_runs([experiment.experiment_id], filter_string=f"tags.`{TAG_STAGE}` = 'manifold'")
    return {**trained, "manifold": out, "manifold_run": run}


def test_every_map_is_scored_drawn_and_saved(mapped) -> None:
    out = mapped["manifold"]
    files = {str(path.relative_to(out)) for path in out.rglob("*") if path.is_file()}
    stems = [f"{source}_{method}" for source in SOURCES for method in MANIFOLD["methods"]]
    assert files == {
        "metrics.json", "coordinates.csv", "correlations_human.csv", "correlations_model.csv",
        "correlations_model_human_order.csv", "scatter.html",
        "figures/correlations_human.png", "figures/correlations_model.png", "figures/correlations_model_human_order.png",
        *(f"figures/{stem}_{kind}.png" for stem in stems for kind in ("2d", "labels")),
    }  # fmt: skip
    metrics = json.loads((out / "metrics.json").read_text())
    data = load_prepared(mapped["prepared"])
    assert metrics["faces"] == 40 and metrics["features_from"] == str(mapped["out"] / "features.npy")
    assert metrics["scored_split"] == "test" and metrics["scored_faces"] == len(data.indices("test")) > 0
    assert metrics["feature_dims"] > 0 and metrics["agreement"]["pairs"] == 3
    assert set(metrics["maps"]) == set(SOURCES)
    for source in SOURCES:
        assert set(metrics["maps"][source]) == set(MANIFOLD["methods"])
        for method in MANIFOLD["methods"]:
            scores = metrics["maps"][source][method]["2d"]
            assert 0 <= scores["trustworthiness"] <= 1
            assert set(scores["knn_r"]) == set(ATTRIBUTES)
            assert all(r is None or -1 <= r <= 1 for r in scores["knn_r"].values())
            # No antonyms among the three attributes: each is split at its median instead.
            assert set(scores["silhouette"]) == {f"{name}_vs_median" for name in ATTRIBUTES}
    coordinates = pd.read_csv(out / "coordinates.csv", dtype={"id": str})
    assert len(coordinates) == 40 * len(SOURCES) * len(MANIFOLD["methods"])
    assert set(coordinates["id"]) == set(data.faces["id"])
    assert "backbone features, UMAP 2-D map of 40 faces" in (out / "scatter.html").read_text()


def test_correlations_are_of_the_test_faces_only(mapped) -> None:
    """The model learned the training faces' ratings: the stage scores on the test split, as data.indices gives it."""
    data = load_prepared(mapped["prepared"])
    test = data.indices("test")
    predicted = model_vectors(mapped["out"], data).predicted
    human = attribute_correlations(data.faces[ATTRIBUTES].iloc[test])
    model = attribute_correlations(predicted.iloc[test])
    for name, expected in (
        ("correlations_human.csv", human),
        ("correlations_model.csv", model),
        ("correlations_model_human_order.csv", model),
    ):
        written = pd.read_csv(mapped["manifold"] / name, index_col=0)
        assert sorted(written.columns) == sorted(ATTRIBUTES) and list(written.index) == list(written.columns)
        np.testing.assert_allclose(written, expected.loc[written.index, written.columns], atol=1e-5)


def test_mlflow_run_holds_the_metrics_and_outputs(mapped) -> None:
    client, run = mapped["client"], mapped["manifold_run"]
    assert run.info.status == "FINISHED"
    assert run.data.params["manifold.methods"] == str(MANIFOLD["methods"])
    assert run.data.tags[TAG_FINGERPRINT] == load_prepared(mapped["prepared"]).meta["fingerprint"]
    metrics = json.loads((mapped["manifold"] / "metrics.json").read_text())
    scores = {key: value for key, value in run.data.metrics.items() if "seconds" not in key}
    assert scores == flat_metrics(run_metrics(metrics, [], {}), "manifold")
    assert "manifold/maps/features/umap/2d/trustworthiness" in scores
    timings = {key for key in run.data.metrics if "seconds" in key}
    assert "manifold/maps/features/umap/2d/seconds" in timings and "manifold/seconds/embed" in timings
    detail = [key for key in flat_metrics(metrics, "manifold") if key not in scores]
    assert detail and all("/knn_r/" in k or "/silhouette/" in k for k in detail), "per-attribute values: metrics.json"
    top = {a.path for a in client.list_artifacts(run.info.run_id, "manifold")}
    assert top == {
        "manifold/metrics.json", "manifold/coordinates.csv", "manifold/correlations_human.csv",
        "manifold/correlations_model.csv", "manifold/correlations_model_human_order.csv", "manifold/scatter.html",
        "manifold/figures",
    }  # fmt: skip
    figures = {a.path for a in client.list_artifacts(run.info.run_id, "manifold/figures")}
    assert "manifold/figures/features_umap_labels.png" in figures and len(figures) == 15


def test_metrics_file_holds_no_timings(mapped) -> None:
    """Timings vary run to run: in the DVC-tracked metrics.json they would change dvc.lock on every identical run."""
    text = (mapped["manifold"] / "metrics.json").read_text()
    assert "seconds" not in text and "faces" in text


def test_model_vectors_are_the_trained_models_features_and_predictions(trained, tmp_path) -> None:
    """The train stage's features and predictions are a pass of every face through its best model, bit for bit."""
    data = load_prepared(trained["prepared"])
    vectors = model_vectors(trained["out"], data)
    net = load_module(trained["models"] / "best.ckpt").net
    np.testing.assert_array_equal(vectors.features, backbone_features(net, data.images))
    np.testing.assert_array_equal(vectors.predicted.to_numpy(), predict_images(net, data.images))
    assert list(vectors.predicted.columns) == list(data.attributes)
    with pytest.raises(DataError, match=r"features.npy: not found; run the train stage"):
        model_vectors(tmp_path, data)
    np.save(tmp_path / "features.npy", vectors.features[:4])
    with pytest.raises(DataError, match=r"features of shape \(4, \d+\) for 40 prepared faces"):
        model_vectors(tmp_path, data)


def test_manifold_refuses_pairs_the_data_lacks(trained, tmp_path, capsys) -> None:
    params = yaml.safe_load((trained["root"] / "params.yaml").read_text())
    params["tracking"]["experiment"] = "manifold-errors"
    params["manifold"] = {**MANIFOLD, "methods": ["pca"], "pairs": [["happy", "smug"]]}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    args = [
        "--params",
        str(tmp_path / "params.yaml"),
        "--prepared",
        str(trained["prepared"]),
        "--train",
        str(trained["out"]),
    ]
    assert stage("manifold")([*args, "--out", str(tmp_path / "manifold")]) == 1
    assert "error: manifold.pairs: ['smug'] not in the prepared data attributes" in capsys.readouterr().err
    assert not (tmp_path / "manifold").exists()


def test_beyond_max_faces_the_maps_place_every_test_face_and_a_seeded_sample(trained, tmp_path) -> None:
    data = load_prepared(trained["prepared"])
    test = data.indices("test")
    rows = mapped_rows(len(data.faces), test, 20, seed=3)
    assert len(rows) == 20 and set(test) <= set(rows) and (np.diff(rows) > 0).all()
    np.testing.assert_array_equal(rows, mapped_rows(len(data.faces), test, 20, seed=3))
    np.testing.assert_array_equal(mapped_rows(len(data.faces), test, None, seed=3), np.arange(len(data.faces)))
    np.testing.assert_array_equal(mapped_rows(len(data.faces), test, len(data.faces), seed=3), np.arange(len(data.faces)))
    params = yaml.safe_load((trained["root"] / "params.yaml").read_text())
    params["tracking"]["experiment"] = "manifold-max-faces"
    params["manifold"] = {**MANIFOLD, "methods": ["pca"], "max_faces": 20, "seed": 3, "knn_neighbors": 4}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    args = ["--params", str(tmp_path / "params.yaml"), "--prepared", str(trained["prepared"]), "--train", str(trained["out"])]
    assert stage("manifold")([*args, "--out", str(tmp_path / "manifold")]) == 0
    coordinates = pd.read_csv(tmp_path / "manifold" / "coordinates.csv", dtype={"id": str})
    assert set(coordinates["id"]) == set(data.faces["id"].iloc[rows])
    metrics = json.loads((tmp_path / "manifold" / "metrics.json").read_text())
    assert metrics["faces"] == 20
    # the scores use the same test faces as without the cap: the human correlation matrix is theirs
    human = data.faces[ATTRIBUTES].iloc[test]
    expected = attribute_correlations(human)
    got = pd.read_csv(tmp_path / "manifold" / "correlations_human.csv", index_col=0)
    np.testing.assert_allclose(got.loc[ATTRIBUTES, ATTRIBUTES].to_numpy(), expected.loc[ATTRIBUTES, ATTRIBUTES].to_numpy(), atol=1e-6)
