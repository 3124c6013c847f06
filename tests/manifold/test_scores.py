import numpy as np
import pandas as pd
import pytest
from sklearn.manifold import trustworthiness
from sklearn.metrics import silhouette_score
from sklearn.preprocessing import StandardScaler

from facetraits.data.synthetic import ATTRIBUTES
from facetraits.errors import DataError
from facetraits.manifold.scores import (
    antonym_pairs,
    knn_recoverability,
    map_trustworthiness,
    median_split_labels,
    pair_labels,
    silhouette_by_label,
)

RNG_SEED = 7


def plane_in_space(rows: int = 150) -> tuple[np.ndarray, np.ndarray]:
    """20-D points that lie near a 2-D plane, and their plane coordinates (the perfect map)."""
    rng = np.random.default_rng(RNG_SEED)
    plane = rng.normal(size=(rows, 2))
    return plane @ rng.normal(size=(2, 20)) + 0.01 * rng.normal(size=(rows, 20)), plane


def test_trustworthiness_is_high_for_the_true_map_and_chance_for_noise() -> None:
    high, plane = plane_in_space()
    noise = np.random.default_rng(0).normal(size=plane.shape)
    faithful, random = (
        map_trustworthiness(high, plane, n_neighbors=10),
        map_trustworthiness(high, noise, n_neighbors=10),
    )
    assert 0.97 < faithful <= 1.0
    assert 0.4 < random < 0.65


def test_trustworthiness_equals_sklearns_on_every_face_and_estimates_it_from_a_sample() -> None:
    rng = np.random.default_rng(RNG_SEED)
    high, plane = plane_in_space(600)
    high *= rng.uniform(0.1, 10, size=high.shape[1])  # columns of unequal spread: standardizing matters
    low = plane + 0.3 * rng.normal(size=plane.shape)  # a blurred map: some false neighbours
    exact = trustworthiness(StandardScaler().fit_transform(high), low, n_neighbors=10)
    assert map_trustworthiness(high, low, n_neighbors=10) == pytest.approx(exact, abs=1e-12)
    assert map_trustworthiness(high.astype(np.float32), low, n_neighbors=10) == pytest.approx(exact, abs=1e-4)
    sampled = [map_trustworthiness(high, low, n_neighbors=10, max_queries=300, seed=seed) for seed in range(5)]
    assert sampled[0] == map_trustworthiness(high, low, n_neighbors=10, max_queries=300, seed=0)
    assert len(set(sampled)) == 5
    assert max(abs(value - exact) for value in sampled) < 0.015  # standard error ~0.003 at 300 queries
    assert 0.6 < exact < 0.95  # neither trivial nor chance, so the tolerance means something
    with pytest.raises(DataError, match="n_neighbors"):
        map_trustworthiness(high[:60], low[:60], n_neighbors=30)
    with pytest.raises(DataError, match="finite"):
        map_trustworthiness(np.where(high == high[0, 0], np.nan, high), low, n_neighbors=10)


def test_knn_recovers_attributes_laid_out_on_the_map_not_on_noise() -> None:
    rng = np.random.default_rng(RNG_SEED)
    targets = rng.normal(size=(200, 3))
    structured = targets[:, :2] + 0.3 * rng.normal(size=(200, 2))
    targets[rng.choice(200, size=40, replace=False), 0] = np.nan
    scores = knn_recoverability(structured, targets, n_neighbors=10, folds=5, seed=0)
    assert scores.shape == (3,)
    assert scores[0] > 0.7 and scores[1] > 0.7
    assert abs(scores[2]) < 0.3
    noise_scores = knn_recoverability(rng.normal(size=(200, 2)), targets, n_neighbors=10, folds=5, seed=0)
    assert np.all(np.abs(noise_scores) < 0.3)
    np.testing.assert_array_equal(scores, knn_recoverability(structured, targets, n_neighbors=10, folds=5, seed=0))


def test_knn_gives_nan_for_attributes_too_sparse_or_constant() -> None:
    coords = np.random.default_rng(0).normal(size=(60, 2))
    sparse = np.full(60, np.nan)
    sparse[:8] = np.arange(8.0)
    targets = np.column_stack([coords[:, 0], sparse, np.ones(60)])
    scores = knn_recoverability(coords, targets, n_neighbors=10, folds=5, seed=0)
    assert scores[0] > 0.8 and np.isnan(scores[1]) and np.isnan(scores[2])


def test_antonyms_found_by_prefix_and_table_only() -> None:
    assert antonym_pairs(ATTRIBUTES) == [
        ("happy", "unhappy"),
        ("trustworthy", "untrustworthy"),
        ("attractive", "unattractive"),
        ("dominant", "submissive"),
    ]
    assert antonym_pairs(["Happy", "sad", "UNHAPPY", "warm"]) == [("Happy", "UNHAPPY"), ("Happy", "sad")]
    omi = ["trustworthy", "attractive", "dominant", "smart", "age", "happy", "well-groomed", "unique"]
    assert antonym_pairs(omi) == []


def test_pair_and_median_labels_leave_unrated_faces_out() -> None:
    values = pd.DataFrame({"happy": [3.0, 1.0, np.nan, 2.0, 5.0], "unhappy": [1.0, 2.0, 1.0, 2.0, 4.0]})
    pairs = pair_labels(values, [("happy", "unhappy")])
    assert list(pairs.columns) == ["happy_vs_unhappy"]
    assert pairs["happy_vs_unhappy"].tolist() == [True, False, pd.NA, False, True]
    medians = median_split_labels(values, ["happy", "unhappy"])
    assert medians["happy_vs_median"].tolist() == [True, False, pd.NA, False, True]
    assert medians["unhappy_vs_median"].tolist() == [False, False, False, False, True]
    with pytest.raises(DataError, match="sad"):
        pair_labels(values, [("happy", "sad")])


def test_silhouette_separates_clustered_labels_from_random_ones() -> None:
    rng = np.random.default_rng(RNG_SEED)
    cluster = np.arange(120) % 2 == 1
    coords = rng.normal(size=(120, 2)) + 5.0 * cluster[:, None]
    labels = pd.DataFrame({"a_vs_b": cluster, "c_vs_d": rng.permutation(cluster)}).astype("boolean")
    scores = silhouette_by_label(coords, labels).set_index("label")["silhouette"]
    assert scores["a_vs_b"] > 0.6
    assert abs(scores["c_vs_d"]) < 0.1
    assert scores["a_vs_b"] == silhouette_score(coords, cluster)
    subsampled = silhouette_by_label(coords, labels, max_rows=50, seed=3)
    pd.testing.assert_frame_equal(subsampled, silhouette_by_label(coords, labels, max_rows=50, seed=3))
    assert abs(subsampled.loc[0, "silhouette"] - scores["a_vs_b"]) < 0.1


def test_silhouette_is_nan_with_a_reason_for_one_class() -> None:
    coords = np.random.default_rng(0).normal(size=(30, 2))
    labels = pd.DataFrame(
        {
            "a_vs_b": pd.array([True] * 25 + [pd.NA] * 5, dtype="boolean"),
            "c_vs_d": pd.array([True, False] * 14 + [pd.NA] * 2, dtype="boolean"),
        }
    )
    table = silhouette_by_label(coords, labels)
    assert table["label"].tolist() == ["a_vs_b", "c_vs_d"]
    assert table["faces"].tolist() == [25, 28]
    assert table["positive_share"].tolist() == [1.0, 0.5]
    assert "1 class" in table.loc[0, "reason"] and table.loc[1, "reason"] == ""
    assert np.isnan(table.loc[0, "silhouette"]) and -1 <= table.loc[1, "silhouette"] <= 1
