"""The synthetic faces' ground truth must hold pixel for pixel, or heatmap checks built on it lie."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from facetraits.data.synthetic import (
    ATTRIBUTE_REGIONS,
    ATTRIBUTES,
    FACTOR_REGION,
    FACTORS,
    NUISANCE_FACTORS,
    RATING_SCALE,
    REGIONS,
    attribute_scores,
    mean_ratings,
    render_face,
    sample_factors,
    simulate_ratings,
)

ANTONYMS = [("happy", "unhappy"), ("trustworthy", "untrustworthy"), ("dominant", "submissive"),
            ("attractive", "unattractive")]
SIGNAL_FACTORS = [f for f in FACTORS if f not in NUISANCE_FACTORS]


def with_factor(row: np.ndarray, **values: float) -> np.ndarray:
    changed = row.copy()
    for name, value in values.items():
        changed[FACTORS.index(name)] = value
    return changed


def region_mask(region_bits: np.ndarray, region: str) -> np.ndarray:
    return (region_bits >> REGIONS.index(region)) & 1 == 1


@pytest.fixture(scope="module")
def rated_faces() -> tuple[np.ndarray, pd.DataFrame]:
    scores = attribute_scores(sample_factors(300, seed=11))
    return scores, mean_ratings(simulate_ratings(scores, n_raters=20, seed=12), n_faces=300)


def test_constants_are_consistent() -> None:
    assert len(REGIONS) <= 8 and len(set(REGIONS)) == len(REGIONS)
    assert len(ATTRIBUTES) == 10 and len(set(ATTRIBUTES)) == 10
    assert set(NUISANCE_FACTORS) < set(FACTORS) and len(set(FACTORS)) == len(FACTORS)
    assert set(FACTOR_REGION) == set(SIGNAL_FACTORS) and set(FACTOR_REGION.values()) == set(REGIONS)
    assert tuple(ATTRIBUTE_REGIONS) == ATTRIBUTES
    assert all(regions and set(regions) <= set(REGIONS) for regions in ATTRIBUTE_REGIONS.values())
    assert ATTRIBUTE_REGIONS["happy"] == ("mouth",)
    assert RATING_SCALE == (1.0, 9.0)


def test_sample_factors_is_deterministic_and_bounded() -> None:
    factors = sample_factors(50, seed=3)
    assert factors.shape == (50, len(FACTORS)) and factors.dtype == np.float64
    assert np.array_equal(factors, sample_factors(50, seed=3))
    assert not np.array_equal(factors, sample_factors(50, seed=4))
    assert np.abs(factors).max() <= 1.0


@pytest.mark.parametrize("n_faces", [0, -2, 2.5, True])
def test_sample_factors_rejects_bad_counts(n_faces: object) -> None:
    with pytest.raises(ValueError, match="n_faces"):
        sample_factors(n_faces, seed=0)  # type: ignore[arg-type]


def test_scores_are_standardized_and_independent_of_the_batch() -> None:
    factors = sample_factors(40_000, seed=5)
    scores = attribute_scores(factors)
    assert scores.shape == (40_000, len(ATTRIBUTES))
    np.testing.assert_allclose(scores.mean(axis=0), 0.0, atol=0.03)
    np.testing.assert_allclose(scores.std(axis=0), 1.0, atol=0.03)
    np.testing.assert_array_equal(attribute_scores(factors[:7]), scores[:7])


def test_scores_reject_a_wrong_factor_matrix() -> None:
    with pytest.raises(ValueError, match="factors"):
        attribute_scores(np.zeros((3, len(FACTORS) - 1)))


@pytest.mark.parametrize("attribute", ATTRIBUTES)
def test_each_score_depends_only_on_factors_in_its_regions(attribute: str) -> None:
    base = sample_factors(20, seed=6)
    other = sample_factors(20, seed=7)
    column = ATTRIBUTES.index(attribute)
    outside = [i for i, f in enumerate(FACTORS) if FACTOR_REGION.get(f) not in ATTRIBUTE_REGIONS[attribute]]
    mixed = base.copy()
    mixed[:, outside] = other[:, outside]
    np.testing.assert_array_equal(attribute_scores(mixed)[:, column], attribute_scores(base)[:, column])
    assert not np.allclose(attribute_scores(other)[:, column], attribute_scores(base)[:, column])


def test_happy_rises_with_the_smile() -> None:
    row = sample_factors(1, seed=8)[0]
    curves = np.linspace(-1.0, 1.0, 9)
    happy = attribute_scores(np.stack([with_factor(row, mouth_curve=c) for c in curves]))[:, 0]
    assert np.all(np.diff(happy) > 0)


def test_ratings_are_integers_on_the_scale_with_n_raters_each() -> None:
    scores = attribute_scores(sample_factors(30, seed=9))
    ratings = simulate_ratings(scores, n_raters=7, seed=1)
    assert list(ratings.columns) == ["face", "attribute", "rater", "rating"]
    assert len(ratings) == 30 * 7 * len(ATTRIBUTES)
    assert np.array_equal(ratings["rating"], ratings["rating"].round())
    assert ratings["rating"].between(*RATING_SCALE).all()
    per_face = ratings.groupby(["face", "attribute"])["rater"].agg(["size", "nunique"])
    assert len(per_face) == 30 * len(ATTRIBUTES)
    assert (per_face["size"] == 7).all() and (per_face["nunique"] == 7).all()
    assert all(r.startswith(f"{a}-r") for a, r in zip(ratings["attribute"], ratings["rater"], strict=True))
    assert ratings.groupby("attribute")["rater"].nunique().max() <= 3 * 7


def test_ratings_are_deterministic_for_a_seed() -> None:
    scores = attribute_scores(sample_factors(20, seed=10))
    first = simulate_ratings(scores, n_raters=5, seed=2)
    pd.testing.assert_frame_equal(first, simulate_ratings(scores, n_raters=5, seed=2))
    assert not first["rating"].equals(simulate_ratings(scores, n_raters=5, seed=3)["rating"])


def test_rater_pools_are_shared_across_faces() -> None:
    scores = attribute_scores(sample_factors(40, seed=10))
    ratings = simulate_ratings(scores, n_raters=5, seed=2, raters_per_pool=6)
    assert (ratings.groupby("attribute")["rater"].nunique() == 6).all()


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"n_raters": 0}, "n_raters"),
        ({"n_raters": 5, "raters_per_pool": 4}, "raters_per_pool"),
        ({"n_raters": 5, "noise_sd": -1.0}, "noise_sd"),
        ({"n_raters": 5, "rater_bias_sd": -0.1}, "rater_bias_sd"),
    ],
)
def test_simulate_ratings_rejects_bad_arguments(kwargs: dict, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        simulate_ratings(np.zeros((2, len(ATTRIBUTES))), seed=0, **kwargs)


def test_mean_ratings_table_layout(rated_faces: tuple[np.ndarray, pd.DataFrame]) -> None:
    _, means = rated_faces
    assert list(means.columns) == list(ATTRIBUTES)
    assert means.index.equals(pd.RangeIndex(300))
    assert not means.isna().any().any()
    assert means.to_numpy().min() >= 1.0 and means.to_numpy().max() <= 9.0


def test_mean_ratings_track_the_true_scores(rated_faces: tuple[np.ndarray, pd.DataFrame]) -> None:
    scores, means = rated_faces
    for column, attribute in enumerate(ATTRIBUTES):
        assert np.corrcoef(means[attribute], scores[:, column])[0, 1] > 0.9, attribute


@pytest.mark.parametrize(("positive", "negative"), ANTONYMS)
def test_antonyms_are_strongly_but_not_perfectly_opposite(
    rated_faces: tuple[np.ndarray, pd.DataFrame], positive: str, negative: str
) -> None:
    scores, means = rated_faces
    score_r = np.corrcoef(scores[:, ATTRIBUTES.index(positive)], scores[:, ATTRIBUTES.index(negative)])[0, 1]
    rating_r = np.corrcoef(means[positive], means[negative])[0, 1]
    assert -0.95 < score_r < -0.6
    assert -0.95 < rating_r < -0.6


def test_mean_ratings_rejects_faces_out_of_range() -> None:
    ratings = pd.DataFrame({"face": [0, 5], "attribute": ["happy", "happy"], "rater": ["a", "b"], "rating": [3.0, 4.0]})
    with pytest.raises(ValueError, match="n_faces"):
        mean_ratings(ratings, n_faces=5)


@pytest.mark.parametrize("size", [32, 64, 128, 224])
def test_render_shapes_and_determinism(size: int) -> None:
    row = sample_factors(1, seed=13)[0]
    image, bits = render_face(row, size)
    assert image.shape == (size, size, 3) and image.dtype == np.uint8
    assert bits.shape == (size, size) and bits.dtype == np.uint8
    again_image, again_bits = render_face(row.copy(), size)
    assert image.tobytes() == again_image.tobytes() and bits.tobytes() == again_bits.tobytes()
    assert bits.max() < 1 << len(REGIONS)
    assert all(region_mask(bits, region).any() for region in REGIONS)
    assert image.std() > 20  # a face, not a blank canvas


def test_different_faces_render_differently() -> None:
    first, second = sample_factors(2, seed=14)
    assert render_face(first, 64)[0].tobytes() != render_face(second, 64)[0].tobytes()


@pytest.mark.parametrize("size", [0, 15, 1025, 64.0])
def test_render_rejects_bad_sizes(size: int) -> None:
    with pytest.raises(ValueError, match="size"):
        render_face(np.zeros(len(FACTORS)), size)


@pytest.mark.parametrize("row", [np.zeros(len(FACTORS) - 1), np.full(len(FACTORS), 1.5), np.zeros((1, len(FACTORS)))])
def test_render_rejects_bad_factor_rows(row: np.ndarray) -> None:
    with pytest.raises(ValueError, match="factors_row"):
        render_face(row, 64)


@pytest.mark.parametrize("factor", SIGNAL_FACTORS)
@pytest.mark.parametrize("size", [32, 96])
def test_each_factor_changes_only_pixels_inside_its_region(factor: str, size: int) -> None:
    region = FACTOR_REGION[factor]
    for row in sample_factors(4, seed=15):
        low_image, low_bits = render_face(with_factor(row, **{factor: -1.0}), size)
        high_image, high_bits = render_face(with_factor(row, **{factor: 1.0}), size)
        changed = (low_image != high_image).any(axis=2)
        inside = region_mask(low_bits, region) | region_mask(high_bits, region)
        assert changed.sum() >= 4, f"{factor} barely changes the image"
        assert (changed & ~inside).sum() <= 0.01 * changed.sum(), f"{factor} changes pixels outside {region}"


def test_mouth_curve_changes_the_mouth_and_nothing_else() -> None:
    row = sample_factors(1, seed=16)[0]
    frown, frown_bits = render_face(with_factor(row, mouth_curve=-1.0), 128)
    smile, smile_bits = render_face(with_factor(row, mouth_curve=1.0), 128)
    mouth = region_mask(frown_bits, "mouth") | region_mask(smile_bits, "mouth")
    mouth_bit = np.uint8(1 << REGIONS.index("mouth"))
    np.testing.assert_array_equal(frown_bits & ~mouth_bit, smile_bits & ~mouth_bit)
    assert (frown[mouth] != smile[mouth]).any(axis=1).sum() > 50
    np.testing.assert_array_equal(frown[~mouth], smile[~mouth])


@pytest.mark.parametrize("nuisance", NUISANCE_FACTORS)
def test_nuisance_changes_the_image_but_no_score(nuisance: str) -> None:
    row = sample_factors(1, seed=17)[0]
    low, high = with_factor(row, **{nuisance: -1.0}), with_factor(row, **{nuisance: 1.0})
    np.testing.assert_array_equal(attribute_scores(low[None]), attribute_scores(high[None]))
    assert render_face(low, 64)[0].tobytes() != render_face(high, 64)[0].tobytes()


def test_jitter_moves_image_and_mask_together() -> None:
    row = sample_factors(1, seed=18)[0]

    def mouth_centres(shift_x: float) -> tuple[float, float]:
        shifted = with_factor(row, shift_x=shift_x)
        frown, bits = render_face(with_factor(shifted, mouth_curve=-1.0), 128)
        smile, _ = render_face(with_factor(shifted, mouth_curve=1.0), 128)
        drawn_columns = np.nonzero((frown != smile).any(axis=2))[1]
        mask_columns = np.nonzero(region_mask(bits, "mouth"))[1]
        return drawn_columns.mean(), mask_columns.mean()

    left_drawn, left_mask = mouth_centres(-1.0)
    right_drawn, right_mask = mouth_centres(1.0)
    assert right_mask - left_mask > 5  # 6 % of 128 px
    assert abs((right_drawn - left_drawn) - (right_mask - left_mask)) <= 1.0
