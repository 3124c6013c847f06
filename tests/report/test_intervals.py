import numpy as np
import pandas as pd
import pytest
from scipy import stats

from facetraits.baselines.reliability import reliability_table, split_half_reliability, split_halves
from facetraits.report.comparison import MEAN_ROW, comparison_table, ratio_column
from facetraits.report.intervals import (
    BootstrapSettings,
    CeilingFaces,
    bootstrap_intervals,
    bootstrap_pearson,
    intervals_note,
    percentile_interval,
    resample_counts,
    resampled_ceiling,
    separated,
    weighted_pearson,
)

ATTRIBUTES = ["happy", "trustworthy", "dominant", "attractive"]


def correlated(rng: np.random.Generator, r: float, faces: int, columns: int) -> tuple[np.ndarray, np.ndarray]:
    """Bivariate normal (human, predicted) pairs with population correlation r, one pair of columns each."""
    human = rng.standard_normal((faces, columns))
    predicted = r * human + np.sqrt(1 - r * r) * rng.standard_normal((faces, columns))
    return human, predicted


def test_weighted_pearson_equals_scipy_on_the_resampled_faces() -> None:
    """Counts are faces drawn that often: r must be scipy's r of the faces repeated, missing ratings left out."""
    rng = np.random.default_rng(0)
    human, predicted = correlated(rng, 0.6, 40, 3)
    human[[2, 7], 1] = np.nan
    counts = resample_counts(40, 5, rng)
    assert counts.sum(axis=1).tolist() == [40.0] * 5
    r = weighted_pearson(counts, human, predicted)
    for b in range(5):
        rows = np.repeat(np.arange(40), counts[b].astype(int))
        for c in range(3):
            keep = rows[~np.isnan(human[rows, c])]
            assert r[b, c] == pytest.approx(stats.pearsonr(human[keep, c], predicted[keep, c]).statistic, abs=1e-12)


def test_constant_predictions_score_zero_and_constant_ratings_are_undefined() -> None:
    human = np.column_stack([np.arange(6.0), np.ones(6), np.arange(6.0)])
    predicted = np.column_stack([np.full(6, 3.0), np.arange(6.0), np.arange(6.0) ** 2])
    r = weighted_pearson(np.ones((1, 6)), human, predicted)[0]
    assert r[0] == 0.0 and np.isnan(r[1])
    assert r[2] == pytest.approx(stats.pearsonr(np.arange(6.0), np.arange(6.0) ** 2).statistic, abs=1e-12)


def test_95_percent_intervals_cover_a_known_r_in_93_to_97_percent_of_simulations() -> None:
    """1,000 seeded data sets of 200 faces with population r = 0.5, each a column resampled at once."""
    rng = np.random.default_rng(2024)
    human, predicted = correlated(rng, 0.5, 200, 1000)
    r = bootstrap_pearson(human, predicted[None], 2000, rng).r[:, 0]
    low, high = percentile_interval(r, 0.95)
    coverage = np.mean((low <= 0.5) & (0.5 <= high))
    assert 0.93 <= coverage <= 0.97, coverage
    assert np.mean(high - low) == pytest.approx(0.21, abs=0.02)  # about +-1.96 (1 - r^2) / sqrt(n)


def study(seed: int = 1) -> tuple[pd.DataFrame, np.ndarray, dict[str, np.ndarray], pd.DataFrame]:
    rng = np.random.default_rng(seed)
    human, _ = correlated(rng, 0.0, 150, len(ATTRIBUTES))
    noise = rng.standard_normal((150, len(ATTRIBUTES)))
    predictions = {"strong": human + 0.5 * noise, "weak": human + 2.0 * rng.standard_normal(human.shape)}
    predictions["strong twin"] = predictions["strong"].copy()
    predictions["weak"][:, 3] = np.nan  # a method without a score for one attribute
    scores = {
        m: {
            a: stats.pearsonr(human[:, k], p[:, k]).statistic
            for k, a in enumerate(ATTRIBUTES)
            if not np.isnan(p[0, k])
        }
        for m, p in predictions.items()
    }
    ceiling = pd.DataFrame({"reliability": [0.81, 0.64, 0.49, 0.9], "ceiling": [0.9, 0.8, 0.7, 0.0]}, ATTRIBUTES)
    return comparison_table(ceiling, scores, ATTRIBUTES), human, predictions, ceiling


def test_intervals_surround_every_estimate_and_ratios_scale_with_the_fixed_ceiling() -> None:
    table, human, predictions, ceiling = study()
    settings = BootstrapSettings(resamples=2000, level=0.95, seed=7)
    intervals = bootstrap_intervals(table, human, predictions, ceiling["ceiling"], settings)
    assert intervals.faces == 150 and list(intervals.low.index) == [*ATTRIBUTES, MEAN_ROW]
    for method in predictions:
        scored = table[method].notna()
        assert (intervals.low.loc[scored, method] < table.loc[scored, method]).all()
        assert (table.loc[scored, method] < intervals.high.loc[scored, method]).all()
        assert intervals.low.loc[~scored, method].isna().all()
        ratio = ratio_column(method)
        shown = scored & (ceiling["ceiling"].reindex(table.index) > 0)
        fixed = ceiling["ceiling"].reindex(table.index)[shown]
        np.testing.assert_allclose(intervals.low.loc[shown, ratio], intervals.low.loc[shown, method] / fixed)
        assert np.isnan(intervals.low.loc["attractive", ratio])  # a ceiling of 0 is nothing to be a fraction of
    assert intervals.low[["human reliability", "human ceiling"]].isna().all().all()
    again = bootstrap_intervals(table, human, predictions, ceiling["ceiling"], settings)
    pd.testing.assert_frame_equal(again.low, intervals.low)


def test_differences_are_paired_over_the_same_resampled_faces() -> None:
    """Identical predictions differ by exactly 0 in every resample; a clearly better method is above 0."""
    table, human, predictions, ceiling = study()
    intervals = bootstrap_intervals(table, human, predictions, None, BootstrapSettings(1000, 0.9, 3))
    pairs = separated(intervals.differences).set_index(["first", "second"])
    twin = pairs.loc[("strong", "strong twin")]
    assert (twin["difference"], twin["low"], twin["high"]) == (0.0, 0.0, 0.0)
    assert (twin["first_better"], twin["second_better"], twin["attributes"]) == (0, 0, 4)
    better = pairs.loc[("strong", "weak")]
    assert better["attributes"] == 3 and better["first_better"] == 3 and 0 < better["low"] < better["difference"]
    per_attribute = intervals.differences.set_index(["first", "second", "attribute"])
    expected = table.loc["happy", "strong"] - table.loc["happy", "weak"]
    assert per_attribute.loc[("strong", "weak", "happy"), "difference"] == pytest.approx(expected, abs=1e-15)
    assert per_attribute.loc[("strong", "weak", "dominant"), "low"] > 0
    assert better["difference"] == pytest.approx(  # the mean over the attributes both have
        (table.loc[ATTRIBUTES[:3], "strong"] - table.loc[ATTRIBUTES[:3], "weak"]).mean(), abs=1e-15
    )


def rater_study(rng: np.random.Generator, simulations: int, faces: int, raters: int, noise: float, q: float):
    """Per simulation (a column): true scores t, `raters` ratings t + N(0, noise²) per face, predictions with
    corr(prediction, t) = q. Then corr(prediction, mean rating) = q * corr(mean rating, t) = q * ceiling: the
    population r / ceiling is q. Returns the long ratings, the mean ratings and the predictions."""
    truth = rng.standard_normal((faces, simulations))
    ratings = truth[:, :, None] + noise * rng.standard_normal((faces, simulations, raters))
    predicted = q * truth + np.sqrt(1 - q * q) * rng.standard_normal((faces, simulations))
    names = [f"s{k}" for k in range(simulations)]
    long = pd.DataFrame(
        {
            "id": np.repeat([f"f{i:03d}" for i in range(faces)], simulations * raters),
            "attribute": np.tile(np.repeat(names, raters), faces),
            "rating": ratings.ravel(),
        }
    )
    return names, long, ratings.mean(axis=2), predicted


def test_the_ceiling_of_all_faces_resampled_with_weight_one_is_the_baselines_ceiling() -> None:
    rng = np.random.default_rng(3)
    names, long, _, _ = rater_study(rng, 3, 60, 5, 1.0, 0.5)
    long = long.drop(index=rng.choice(len(long), 200, replace=False))  # faces with unequal counts, some unsplit
    halves = split_halves(long, names, repeats=6, seed=1)
    expected = split_half_reliability(long, names, repeats=6, seed=1)["ceiling"].to_numpy()
    np.testing.assert_allclose(resampled_ceiling(np.ones((1, 60)), halves.means)[0], expected, rtol=1e-12)
    twice = resampled_ceiling(np.full((1, 60), 2.0), halves.means)[0]  # every face drawn twice: the same r
    np.testing.assert_allclose(twice, expected, rtol=1e-12)


def test_r_over_a_resampled_ceiling_covers_a_known_ratio_where_a_fixed_ceiling_does_not() -> None:
    """1,000 seeded studies of 200 faces (100 of them test faces) with 2 raters each (reliability 0.5: a noisy
    ceiling) and a model at r / ceiling = 0.95. Holding the ceiling fixed ignores its sampling error and covers less;
    resampling it with the faces covers the ratio in 93-97% of simulations."""
    rng = np.random.default_rng(2024)
    q, test = 0.95, np.arange(100)
    names, long, means, predicted = rater_study(rng, 1000, 200, 2, 1.4, q)
    halves = split_halves(long, names, repeats=2, seed=0)
    human = reliability_table(halves)
    scores = {n: stats.pearsonr(means[test, k], predicted[test, k]).statistic for k, n in enumerate(names)}
    table = comparison_table(human, {"model": scores}, names)
    settings = BootstrapSettings(resamples=1000, level=0.95, seed=1)
    fixed, resampled = (
        bootstrap_intervals(table, means[test], {"model": predicted[test]}, human["ceiling"], settings, faces)
        for faces in (None, CeilingFaces(halves.means, test))
    )
    coverage = {}
    for name, intervals in (("fixed", fixed), ("resampled", resampled)):
        low, high = (bounds.loc[names, ratio_column("model")] for bounds in (intervals.low, intervals.high))
        coverage[name] = np.mean((low <= q) & (q <= high))
    assert 0.93 <= coverage["resampled"] <= 0.97, coverage
    assert coverage["fixed"] < 0.92, coverage
    pd.testing.assert_frame_equal(resampled.low[["model"]], fixed.low[["model"]])  # r itself: the same draws
    assert resampled.ceiling_resampled and not fixed.ceiling_resampled
    assert "redraws the faces the ceiling comes from" in intervals_note(resampled, ceiling_shown=True)
    assert "held fixed" in intervals_note(fixed, ceiling_shown=True)
