import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from facetraits.config import ManifoldParams
from facetraits.errors import ConfigError, DataError
from facetraits.manifold.correlations import attribute_correlations, cluster_order
from facetraits.manifold.study import (
    ManifoldStudy,
    ModelVectors,
    label_table,
    manifold_study,
    write_manifold_outputs,
)
from facetraits.manifold.scores import knn_recoverability, silhouette_by_label
from facetraits.numbers import flat_metrics

FACES = 60
# Positions, as data.indices gives them: maps place all faces, rating-based scores use the test faces only.
TRAIN, TEST = np.arange(36), np.arange(36, FACES)
ATTRIBUTES = ["happy", "unhappy", "dominant", "submissive"]
# Every source, both cheap methods and both dimensionalities: t-SNE and 3-D are covered here, not in the stage test.
# Perplexity 10 suits 60 faces: the default 30 clamps to (60 - 1) / 3, where 3-D t-SNE stalled (KL 0.94, 2-D 0.12)
# on an EPYC host whatever the seed, and the test would measure the optimizer, not the maps.
PARAMS = ManifoldParams(methods=["pca", "tsne"], dims=[2, 3], perplexity=10, knn_neighbors=5, permutations=99, seed=0)


def faces(seed: int = 0) -> tuple[np.ndarray, pd.DataFrame]:
    """Two latent traits, each rated by an attribute and its antonym; a tenth of the ratings missing."""
    rng = np.random.default_rng(seed)
    latent = rng.normal(size=(FACES, 2))
    ratings = latent[:, [0, 0, 1, 1]] * [1, -1, 1, -1] + 0.3 * rng.normal(size=(FACES, 4))
    human = pd.DataFrame(50 + 10 * ratings, columns=ATTRIBUTES)
    human = human.mask(rng.random(human.shape) < 0.1)
    return latent, human


def ids() -> np.ndarray:
    return np.array([f"face{i:03d}" for i in range(FACES)])


def structured_model(latent: np.ndarray, human: pd.DataFrame) -> ModelVectors:
    """Features that hold the two traits in 30 dimensions, predictions that track the ratings."""
    rng = np.random.default_rng(1)
    features = latent @ rng.normal(size=(2, 30)) + 0.05 * rng.normal(size=(FACES, 30))
    predicted = human.fillna(human.mean()) + rng.normal(size=human.shape)
    return ModelVectors(features.astype(np.float32), predicted, "structured.ckpt", 0.5)


def noise_model() -> ModelVectors:
    rng = np.random.default_rng(2)
    predicted = pd.DataFrame(rng.normal(size=(FACES, len(ATTRIBUTES))), columns=ATTRIBUTES)
    return ModelVectors(rng.normal(size=(FACES, 30)).astype(np.float32), predicted, "noise.ckpt", 0.5)


@pytest.fixture(scope="module")
def studies() -> dict[str, ManifoldStudy]:
    latent, human = faces()
    return {
        "structured": manifold_study(structured_model(latent, human), ids(), human, TRAIN, TEST, PARAMS),
        "noise": manifold_study(noise_model(), ids(), human, TRAIN, TEST, PARAMS),
    }


def maps_of(study: ManifoldStudy, source: str) -> dict:
    return {(m.method, m.dims): m for m in study.maps if m.source == source}


def test_every_source_method_and_dims_is_mapped_and_scored_in_range(studies) -> None:
    study = studies["structured"]
    assert [(m.source, m.method, m.dims) for m in study.maps] == [
        (source, method, dims) for source in PARAMS.sources for method in PARAMS.methods for dims in PARAMS.dims
    ]
    for face_map in study.maps:
        assert face_map.coords.shape == (FACES, face_map.dims) and np.isfinite(face_map.coords).all()
        assert 0 <= face_map.trustworthiness <= 1
        assert list(face_map.knn_r.index) == ATTRIBUTES and (face_map.knn_r.abs() <= 1).all()
        assert face_map.silhouette["label"].tolist() == ["happy_vs_unhappy", "dominant_vs_submissive"]
        assert face_map.silhouette["silhouette"].between(-1, 1).all()


def test_structured_features_map_better_than_noise(studies) -> None:
    structured, noise = maps_of(studies["structured"], "features"), maps_of(studies["noise"], "features")
    for key, face_map in structured.items():
        assert face_map.trustworthiness > noise[key].trustworthiness + 0.15
        # Noise: chance r over 24 test faces and two independent traits has an SD of ~0.15.
        assert face_map.knn_r_mean > 0.6 and abs(noise[key].knn_r_mean) < 0.4
        assert face_map.silhouette_mean > noise[key].silhouette_mean + 0.05
    # The human-rating maps do not depend on the model: both studies draw them identically.
    np.testing.assert_array_equal(
        maps_of(studies["structured"], "human")[("tsne", 2)].coords,
        maps_of(studies["noise"], "human")[("tsne", 2)].coords,
    )


def test_human_ratings_are_imputed_for_mapping_only(studies) -> None:
    _, human = faces()
    study = studies["structured"]
    assert study.imputed == human.isna().to_numpy().sum() > 0
    pd.testing.assert_frame_equal(study.human, human)
    labelled = human["happy"].notna() & human["unhappy"].notna()
    for face_map in study.maps:
        assert face_map.silhouette.set_index("label").loc["happy_vs_unhappy", "faces"] == labelled.iloc[TEST].sum()


def test_rating_based_scores_use_only_the_test_faces(studies) -> None:
    """The model saw the training faces' ratings: theirs must not enter kNN r, silhouettes or correlations."""
    latent, human = faces()
    reference = studies["structured"]
    corrupted = human.copy()
    corrupted.iloc[TRAIN] = np.random.default_rng(9).normal(50, 10, size=(len(TRAIN), len(ATTRIBUTES)))
    study = manifold_study(structured_model(latent, human), ids(), corrupted, TRAIN, TEST, PARAMS)
    np.testing.assert_array_equal(study.scored_rows, TEST)
    pd.testing.assert_frame_equal(study.human_correlations, attribute_correlations(human.iloc[TEST]))
    pd.testing.assert_frame_equal(study.human_correlations, reference.human_correlations)
    pd.testing.assert_frame_equal(study.model_correlations, attribute_correlations(reference.predicted.iloc[TEST]))
    assert study.agreement == reference.agreement
    assert study.human_order == reference.human_order and study.model_order == reference.model_order
    # Model maps do not depend on human ratings; the human maps do (training faces are mapped too).
    for source in ("features", "predicted"):
        for key, face_map in maps_of(study, source).items():
            kept = maps_of(reference, source)[key]
            np.testing.assert_array_equal(face_map.coords, kept.coords)
            assert face_map.trustworthiness == kept.trustworthiness
            pd.testing.assert_series_equal(face_map.knn_r, kept.knn_r)
            pd.testing.assert_frame_equal(face_map.silhouette, kept.silhouette)
            expected = knn_recoverability(
                face_map.coords[TEST], human.iloc[TEST].to_numpy(), PARAMS.knn_neighbors, PARAMS.folds, PARAMS.seed
            )
            np.testing.assert_array_equal(face_map.knn_r.to_numpy(), expected)
            labels = label_table(human.iloc[TEST].reset_index(drop=True), PARAMS.pairs)
            pd.testing.assert_frame_equal(
                face_map.silhouette, silhouette_by_label(face_map.coords[TEST], labels, seed=PARAMS.seed)
            )


def test_correlation_agreement_follows_the_model(studies) -> None:
    structured, noise = studies["structured"], studies["noise"]
    assert structured.agreement["pearson"] > 0.95 and structured.agreement["pairs"] == 6
    assert noise.agreement["pearson"] < structured.agreement["pearson"] - 0.3
    # 1 - r keeps antonyms apart: neither pair sits side by side in either cluster order.
    assert structured.human_order == cluster_order(structured.human_correlations)
    assert structured.model_order == cluster_order(structured.model_correlations)
    for order in (structured.human_order, structured.model_order):
        assert sorted(order) == sorted(ATTRIBUTES)
        assert abs(order.index("happy") - order.index("unhappy")) > 1
        assert abs(order.index("dominant") - order.index("submissive")) > 1


def test_pair_labels_auto_explicit_or_median() -> None:
    _, human = faces()
    assert list(label_table(human, "auto").columns) == ["happy_vs_unhappy", "dominant_vs_submissive"]
    assert list(label_table(human, [["submissive", "dominant"]]).columns) == ["submissive_vs_dominant"]
    no_antonyms = human[["happy", "dominant"]]
    assert list(label_table(no_antonyms, "auto").columns) == ["happy_vs_median", "dominant_vs_median"]
    with pytest.raises(ConfigError, match=r"manifold.pairs: \['smug'\]"):
        label_table(human, [["happy", "smug"]])


def test_outputs_hold_every_map_figure_and_number(studies, tmp_path: Path) -> None:
    study = studies["structured"]
    outputs = write_manifold_outputs(study, tmp_path / "manifold")
    root = tmp_path / "manifold"
    stems = [f"{source}_{method}" for source in PARAMS.sources for method in PARAMS.methods]
    assert {str(path.relative_to(root)) for path in root.rglob("*") if path.is_file()} == {
        "metrics.json",
        "coordinates.csv",
        "correlations_human.csv",
        "correlations_model.csv",
        "correlations_model_human_order.csv",
        "scatter.html",
        "figures/correlations_human.png",
        "figures/correlations_model.png",
        "figures/correlations_model_human_order.png",
        *(f"figures/{stem}_{kind}.png" for stem in stems for kind in ("2d", "labels", "3d")),
    }
    metrics = json.loads((root / "metrics.json").read_text())
    assert metrics == outputs.metrics
    tsne = metrics["maps"]["features"]["tsne"]["2d"]
    face_map = maps_of(study, "features")[("tsne", 2)]
    assert tsne["trustworthiness"] == pytest.approx(face_map.trustworthiness, abs=1e-6)
    assert tsne["knn_r"]["happy"] == pytest.approx(face_map.knn_r["happy"], abs=1e-6)
    assert metrics["human_values_imputed"] == study.imputed and metrics["faces"] == FACES
    assert metrics["scored_split"] == "test" and metrics["scored_faces"] == len(TEST)
    assert metrics["features_from"] == "structured.ckpt" and metrics["agreement"]["pairs"] == 6
    assert outputs.flat_metrics["manifold/maps/features/tsne/2d/knn_r_mean"] == tsne["knn_r_mean"]
    assert outputs.flat_metrics["manifold/agreement/pearson"] == metrics["agreement"]["pearson"]
    assert (
        len(outputs.flat_metrics)
        == len(PARAMS.sources) * len(PARAMS.methods) * len(PARAMS.dims) * 4 + 4 + 5 + 4
    ), "MLflow charts each map's four summary numbers; per-attribute and per-label values stay in metrics.json"
    coordinates = pd.read_csv(root / "coordinates.csv", dtype={"id": str})
    maps = coordinates.groupby(["source", "method", "dims"], sort=False)
    assert list(maps.groups) == [(m.source, m.method, m.dims) for m in study.maps]
    for face_map in study.maps:
        rows = maps.get_group((face_map.source, face_map.method, face_map.dims))
        np.testing.assert_array_equal(rows["id"], study.ids)
        np.testing.assert_allclose(rows[list("xyz"[: face_map.dims])], face_map.coords, rtol=1e-5, atol=1e-6)
    for stem, corr, order in (
        ("correlations_human", study.human_correlations, study.human_order),
        ("correlations_model", study.model_correlations, study.model_order),
        ("correlations_model_human_order", study.model_correlations, study.human_order),
    ):
        written = pd.read_csv(root / f"{stem}.csv", index_col=0)
        assert list(written.columns) == list(written.index) == order
        np.testing.assert_allclose(written, corr.loc[order, order], atol=1e-6)
    assert study.model_order != study.human_order
    assert "t-SNE 2-D map of 60 faces" in (root / "scatter.html").read_text()


def test_undefined_scores_are_null_and_left_out_of_mlflow(tmp_path: Path) -> None:
    latent, human = faces()
    human["calm"] = 50.0
    model = structured_model(latent, human)
    params = ManifoldParams(sources=["human"], methods=["pca"], dims=[2], knn_neighbors=5, permutations=9)
    study = manifold_study(model, ids(), human, TRAIN, TEST, params)
    outputs = write_manifold_outputs(study, tmp_path / "manifold")
    metrics = json.loads((tmp_path / "manifold" / "metrics.json").read_text())
    knn = metrics["maps"]["human"]["pca"]["2d"]["knn_r"]
    assert knn["calm"] is None and knn["happy"] > 0.5
    assert "manifold/maps/human/pca/2d/knn_r/calm" not in outputs.flat_metrics
    assert flat_metrics({"a": {"b": 1, "c": None, "d": "text", "e": True}}, "manifold") == {"manifold/a/b": 1.0}
    assert not (tmp_path / "manifold" / "figures" / "human_pca_3d.png").exists()


def test_fewer_than_three_attributes_have_no_agreement() -> None:
    latent, human = faces()
    model = structured_model(latent, human)
    params = ManifoldParams(sources=["predicted"], methods=["pca"], dims=[2], knn_neighbors=5)
    study = manifold_study(model, ids(), human[["happy", "dominant"]], TRAIN, TEST, params)
    assert study.agreement is None and study.predicted.columns.tolist() == ["happy", "dominant"]


@pytest.mark.parametrize(
    ("test", "message"),
    [(np.array([], dtype=int), "split is empty"), (np.array([0, FACES]), "distinct positions among the 60")],
)
def test_maps_need_test_faces_to_score_on(test: np.ndarray, message: str) -> None:
    latent, human = faces()
    params = ManifoldParams(sources=["predicted"], methods=["pca"], dims=[2], knn_neighbors=5)
    with pytest.raises(DataError, match=message):
        manifold_study(structured_model(latent, human), ids(), human, TRAIN, test, params)
