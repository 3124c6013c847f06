"""Bootstrap confidence intervals over test faces: how far each r, mean r, r/ceiling and method difference could
move with another sample of faces.

Every resample draws the test faces with replacement once and scores every method and attribute on those same
faces, so a difference between two methods is paired: the face-to-face variation both share cancels. Pearson r
of all resamples comes from weighted moments (each resample is a vector of counts per face), so 10,000 resamples
of 34 attributes are a few matrix products. Intervals are percentile intervals of the resampled statistic.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from facetraits.errors import DataError
from facetraits.report.comparison import MEAN_ROW, ratio_column

CHUNK_CELLS = 2_000_000  # resamples x faces per matrix product: bounds memory at any test-split size


@dataclass(frozen=True)
class BootstrapSettings:
    resamples: int
    level: float  # e.g. 0.95
    seed: int


@dataclass(frozen=True)
class Intervals:
    """`low` / `high`: shaped like the comparison table (NaN where a cell has no interval: the human columns);
    `differences`: per pair of methods and attribute (and the mean row), the r difference first - second over
    the attributes both have, with its interval."""

    low: pd.DataFrame
    high: pd.DataFrame
    differences: pd.DataFrame
    settings: BootstrapSettings
    faces: int


def resample_counts(faces: int, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """(resamples, faces): how often each face is drawn in each resample of `faces` faces with replacement."""
    drawn = rng.integers(0, faces, size=(resamples, faces))
    offsets = np.arange(resamples)[:, None] * faces
    return np.bincount((drawn + offsets).ravel(), minlength=resamples * faces).reshape(resamples, faces).astype(float)


def weighted_pearson(counts: np.ndarray, human: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """Pearson r of predicted against human per resample (rows of `counts`) and column: (resamples, columns).

    Missing values (NaN in either) leave that face out of that column. A column whose predictions are constant
    scores 0, as the training metrics count it; a resample with no variance in the human ratings is NaN.
    """
    present = ~(np.isnan(human) | np.isnan(predicted))
    x = np.where(present, predicted, 0.0)
    y = np.where(present, human, 0.0)
    n_all = present.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        x = np.where(present, x - x.sum(axis=0) / n_all, 0.0)  # centred: the moments below do not cancel
        y = np.where(present, y - y.sum(axis=0) / n_all, 0.0)
    constant = np.abs(x).max(axis=0, initial=0.0) < 1e-12
    moments = counts @ np.concatenate([present, x, y, x * x, y * y, x * y], axis=1)
    n, sx, sy, sxx, syy, sxy = np.split(moments, 6, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        var_x, var_y = sxx - sx * sx / n, syy - sy * sy / n
        r = (sxy - sx * sy / n) / np.sqrt(var_x * var_y)
    r = np.where(var_y > 1e-12 * np.maximum(syy, 1e-300), np.clip(r, -1.0, 1.0), np.nan)
    return np.where(constant & (var_y > 0), 0.0, r)


def bootstrap_pearson(
    human: np.ndarray, predicted: np.ndarray, resamples: int, rng: np.random.Generator
) -> np.ndarray:
    """human (faces, attributes), predicted (methods, faces, attributes) -> r of every resample, (resamples,
    methods, attributes): each resample's faces are the same for every method and attribute."""
    methods, faces, attributes = predicted.shape
    if human.shape != (faces, attributes):
        raise DataError(f"human ratings are {human.shape}, predictions {predicted.shape[1:]}: not the same faces")
    columns_human = np.tile(human, (1, methods))
    columns_predicted = predicted.transpose(1, 0, 2).reshape(faces, methods * attributes)
    chunk = max(1, CHUNK_CELLS // max(faces, 1))
    r = np.empty((resamples, methods * attributes))
    for start in range(0, resamples, chunk):
        counts = resample_counts(faces, min(chunk, resamples - start), rng)
        r[start : start + len(counts)] = weighted_pearson(counts, columns_human, columns_predicted)
    return r.reshape(resamples, methods, attributes)


def percentile_interval(samples: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    """Along axis 0; NaN where fewer than half the resamples define the statistic."""
    tail = (1.0 - level) / 2.0
    defined = np.mean(~np.isnan(samples), axis=0) >= 0.5
    with np.errstate(invalid="ignore"):
        low, high = np.nanquantile(np.where(defined, samples, 0.0), [tail, 1.0 - tail], axis=0)
    return np.where(defined, low, np.nan), np.where(defined, high, np.nan)


def mean_over_attributes(samples: np.ndarray, scored: np.ndarray) -> np.ndarray:
    """Per resample, the mean over the attributes `scored` marks (as the table's mean row averages them)."""
    values = np.where(scored, samples, np.nan)
    count = np.sum(~np.isnan(values), axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, np.nansum(values, axis=-1) / count, np.nan)


def bootstrap_intervals(
    table: pd.DataFrame,
    human: np.ndarray,
    predictions: Mapping[str, np.ndarray],
    ceiling: pd.Series | None,
    settings: BootstrapSettings,
) -> Intervals:
    """Intervals for the comparison table's method and r/ceiling cells and for every pairwise difference.

    `human`: (test faces, attributes) mean ratings; `predictions`: each method's (test faces, attributes), in the
    table's attribute order. The ceiling (from every face's raw ratings) is held fixed: r/ceiling's interval is
    r's interval scaled by it. Means are over the attributes the table has a value for, as its mean row.
    """
    attributes = [a for a in table.index if a != MEAN_ROW]
    methods = list(predictions)
    stacked = np.stack([np.asarray(predictions[m], dtype=np.float64) for m in methods])
    rng = np.random.default_rng(settings.seed)
    r = bootstrap_pearson(np.asarray(human, dtype=np.float64), stacked, settings.resamples, rng)
    scored = table.loc[attributes, methods].notna().to_numpy().T  # (methods, attributes)
    r = np.where(scored, r, np.nan)
    samples = {m: np.column_stack([r[:, k], mean_over_attributes(r[:, k], scored[k])]) for k, m in enumerate(methods)}
    if ceiling is not None:
        fixed = ceiling.reindex(attributes).where(lambda c: c > 0).to_numpy(dtype=np.float64)
        for k, method in enumerate(methods):
            ratios = r[:, k] / fixed
            has_ratio = scored[k] & ~np.isnan(fixed)
            samples[ratio_column(method)] = np.column_stack([ratios, mean_over_attributes(ratios, has_ratio)])
    low = pd.DataFrame(np.nan, index=table.index, columns=table.columns)
    high = low.copy()
    for column, values in samples.items():
        low[column], high[column] = percentile_interval(values, settings.level)
    rows = []
    for (i, first), (j, second) in itertools.combinations(enumerate(methods), 2):
        shared = scored[i] & scored[j]
        differences = r[:, i] - r[:, j]
        both = np.column_stack([differences, mean_over_attributes(differences, shared)])
        lows, highs = percentile_interval(both, settings.level)
        point = table.loc[attributes, first] - table.loc[attributes, second]
        for attribute, estimate, lo, hi in zip([*attributes, MEAN_ROW], [*point, point.mean()], lows, highs):
            rows.append((first, second, attribute, estimate, lo, hi))
    differences = pd.DataFrame(rows, columns=["first", "second", "attribute", "difference", "low", "high"])
    return Intervals(low, high, differences, settings, faces=int(human.shape[0]))


def separated(differences: pd.DataFrame) -> pd.DataFrame:
    """Per pair: the mean difference with its interval and on how many attributes the interval lies above or
    below 0 (the first or the second method better on those faces' evidence)."""
    per_attribute = differences[differences["attribute"] != MEAN_ROW]
    means = differences[differences["attribute"] == MEAN_ROW].set_index(["first", "second"])
    grouped = per_attribute.groupby(["first", "second"], sort=False)
    summary = pd.DataFrame(
        {
            "first_better": grouped.apply(lambda g: int((g["low"] > 0).sum()), include_groups=False),
            "second_better": grouped.apply(lambda g: int((g["high"] < 0).sum()), include_groups=False),
            "attributes": grouped["difference"].count(),
        }
    )
    return means[["difference", "low", "high"]].join(summary).reset_index()


def level_label(settings: BootstrapSettings) -> str:
    return f"{settings.level * 100:g}%"


def intervals_note(intervals: Intervals, ceiling_shown: bool) -> str:
    settings = intervals.settings
    note = (
        f"Brackets: {level_label(settings)} percentile bootstrap intervals over the {intervals.faces} test faces "
        f"({settings.resamples:,} resamples, seed {settings.seed}); every method is scored on the same resampled "
        "faces, so differences between methods are paired."
    )
    if ceiling_shown:
        note += " The human ceiling is held fixed (it comes from every face's raw ratings, not the test faces')."
    return note

