"""The hand-crafted baseline must see what pixels carry and never see the test faces' ratings."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVR

from facetraits.baselines import handcrafted
from facetraits.baselines.handcrafted import fit_svr_baseline, handcrafted_features
from facetraits.data.synthetic import ATTRIBUTES, attribute_scores, render_face, sample_factors
from facetraits.errors import DataError

SETTINGS = {"hist_bins": 8, "lbp_points": 8, "lbp_radius": 1.0, "hog_orientations": 9, "hog_cell": 8}
SVR_SETTINGS = {"c_grid": (0.3, 1.0, 3.0, 10.0), "epsilon": 0.1, "gamma": "scale"}
N_FACES = 240  # 48 test faces: a shuffled target's test r then has sd ~0.15, a real signal stands out
TRAIN, VAL, TEST = np.arange(0, 144), np.arange(144, 192), np.arange(192, N_FACES)


@pytest.fixture(scope="module")
def faces() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(images, features, ratings on a 1-9 scale) of synthetic faces at 32 px."""
    factors = sample_factors(N_FACES, seed=0)
    images = np.stack([render_face(row, 32)[0] for row in factors])
    return images, handcrafted_features(images, **SETTINGS), 5 + 1.5 * attribute_scores(factors)


def test_feature_layout_hsv_then_lbp_then_hog(faces: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    _, features, _ = faces
    bins, lbp_bins = SETTINGS["hist_bins"], SETTINGS["lbp_points"] + 2
    hog_length = 3 * 3 * 2 * 2 * SETTINGS["hog_orientations"]  # 4 x 4 cells of 8 px -> 3 x 3 blocks of 2 x 2
    assert features.shape == (N_FACES, 3 * bins + lbp_bins + hog_length) and features.dtype == np.float32
    assert np.isfinite(features).all()
    colour = features[:, : 3 * bins].reshape(N_FACES, 3, bins)
    np.testing.assert_allclose(colour.sum(axis=2), 1.0, rtol=1e-6)
    np.testing.assert_allclose(features[:, 3 * bins : 3 * bins + lbp_bins].sum(axis=1), 1.0, rtol=1e-6)

    red = np.zeros((1, 32, 32, 3), dtype=np.uint8)
    red[..., 0] = 255
    hue, saturation, value = handcrafted_features(red, **SETTINGS)[0, : 3 * bins].reshape(3, bins)
    assert hue[0] == saturation[-1] == value[-1] == 1.0  # pure red: hue 0, full saturation and value


def test_chunks_and_workers_do_not_change_features(
    faces: tuple[np.ndarray, np.ndarray, np.ndarray], monkeypatch: pytest.MonkeyPatch, tmp_path
) -> None:
    images, features, _ = faces
    on_disk = tmp_path / "images.npy"
    np.save(on_disk, images[:20])
    monkeypatch.setattr(handcrafted, "CHUNK_FACES", 7)
    chunked = handcrafted_features(np.load(on_disk, mmap_mode="r"), **SETTINGS, n_jobs=2)
    np.testing.assert_array_equal(chunked, features[:20])


def test_learns_a_mouth_driven_attribute_not_shuffled_ratings(faces: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    """happy is the mouth's curve and opening: lip and mouth-interior colour and the mouth's edges."""
    _, features, ratings = faces
    happy = ratings[:, [ATTRIBUTES.index("happy")]]
    result = fit_svr_baseline(features, happy, TRAIN, VAL, **SVR_SETTINGS)
    assert stats.pearsonr(result.predictions[TEST, 0], happy[TEST, 0]).statistic > 0.45
    shuffled_r = []
    for seed in range(5):
        shuffled = np.random.default_rng(seed).permutation(happy)
        predicted = fit_svr_baseline(features, shuffled, TRAIN, VAL, **SVR_SETTINGS).predictions
        shuffled_r.append(stats.pearsonr(predicted[TEST, 0], shuffled[TEST, 0]).statistic)
    assert abs(np.mean(shuffled_r)) < 0.2


@pytest.mark.parametrize("gamma", ["scale", "auto", 0.002])
def test_is_the_scaler_and_rbf_svr_pipeline_fit_on_train_faces(
    faces: tuple[np.ndarray, np.ndarray, np.ndarray], gamma: str | float
) -> None:
    """The shared precomputed kernel must give exactly the model the paper's pipeline gives."""
    _, features, ratings = faces
    ratings = ratings[:, :2].copy()
    ratings[TRAIN[::4], 1] = np.nan
    result = fit_svr_baseline(features, ratings, TRAIN, VAL, c_grid=(1.0, 3.0), epsilon=0.1, gamma=gamma)
    for column, c in enumerate(result.chosen_c):
        rated = TRAIN[np.isfinite(ratings[TRAIN, column])]
        mean, sd = ratings[rated, column].mean(), ratings[rated, column].std()
        reference = make_pipeline(StandardScaler(), SVR(kernel="rbf", C=c, epsilon=0.1, gamma=gamma))
        reference.fit(features[rated], (ratings[rated, column] - mean) / sd)
        expected = reference.predict(features) * sd + mean
        np.testing.assert_allclose(result.predictions[:, column], expected, rtol=1e-6, atol=1e-6)


def test_refit_keeps_the_val_chosen_c_and_is_the_pipeline_fit_on_train_and_val_faces(
    faces: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> None:
    _, features, ratings = faces
    ratings = ratings[:, :2].copy()
    ratings[VAL[::4], 1] = np.nan
    both = np.r_[TRAIN, VAL]
    chosen = fit_svr_baseline(features, ratings, TRAIN, VAL, c_grid=(1.0, 3.0), epsilon=0.1, gamma="scale")
    refitted = fit_svr_baseline(features, ratings, TRAIN, VAL, c_grid=(1.0, 3.0), epsilon=0.1, gamma="scale", refit_rows=both)
    assert refitted.chosen_c == chosen.chosen_c and refitted.val_pearson == chosen.val_pearson
    for column, c in enumerate(refitted.chosen_c):
        rated = both[np.isfinite(ratings[both, column])]
        mean, sd = ratings[rated, column].mean(), ratings[rated, column].std()
        reference = make_pipeline(StandardScaler(), SVR(kernel="rbf", C=c, epsilon=0.1, gamma="scale"))
        reference.fit(features[rated], (ratings[rated, column] - mean) / sd)
        np.testing.assert_allclose(refitted.predictions[:, column], reference.predict(features) * sd + mean, rtol=1e-6, atol=1e-6)
    assert not np.allclose(refitted.predictions, chosen.predictions)


def test_test_faces_never_influence_the_fit(faces: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    _, features, ratings = faces
    reference = fit_svr_baseline(features, ratings, TRAIN, VAL, **SVR_SETTINGS)
    tampered = ratings.copy()
    tampered[TEST] = np.random.default_rng(1).normal(scale=1e4, size=tampered[TEST].shape)
    tampered[TEST[::3]] = np.nan
    again = fit_svr_baseline(features, tampered, TRAIN, VAL, **SVR_SETTINGS)
    np.testing.assert_array_equal(again.predictions, reference.predictions)
    assert again.chosen_c == reference.chosen_c and again.val_pearson == reference.val_pearson
    assert np.isfinite(reference.predictions).all() and len(reference.chosen_c) == len(ATTRIBUTES)


def test_rating_scale_does_not_matter(faces: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    """Standardized targets: the same faces rated on 0-100 instead of 1-9 get the same model, rescaled."""
    _, features, ratings = faces
    some = ratings[:, :3].copy()
    some[TRAIN[::5], 1] = np.nan  # unrated train faces are left out
    small = fit_svr_baseline(features, some, TRAIN, VAL, **SVR_SETTINGS)
    large = fit_svr_baseline(features, 12.5 * some - 12.5, TRAIN, VAL, **SVR_SETTINGS)
    np.testing.assert_allclose(large.predictions, 12.5 * small.predictions - 12.5, rtol=1e-9, atol=1e-8)
    assert large.chosen_c == small.chosen_c


def test_overlapping_train_and_val_faces_are_refused(faces: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    _, features, ratings = faces
    with pytest.raises(DataError, match="share faces"):
        fit_svr_baseline(features, ratings, TRAIN, np.r_[VAL, TRAIN[:2]], **SVR_SETTINGS)
