"""Bootstrap confidence intervals over test faces: how far each r, mean r, r/ceiling and method difference could
move with another sample of faces.

Every resample draws the test faces with replacement once and scores every method and attribute on those same
faces, so a difference between two methods is paired: the face-to-face variation both share cancels. Pearson r
of all resamples comes from weighted moments (each resample is a vector of counts per face), so 10,000 resamples
of 34 attributes are a few matrix products. Intervals are percentile intervals of the resampled statistic.

The human ceiling comes from every face's raw ratings (split-half reliability over all faces). Where the baselines
stage wrote the split halves it was computed from, each resample also redraws the faces of the ceiling (the test
faces as drawn for the models, the other faces drawn apart) and recomputes it from the same splits, so r/ceiling's
interval carries the ceiling's own sampling error. Without them the ceiling is held fixed.
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
class CeilingFaces:
    """The split halves the ceiling was computed from (baselines' split_halves.npy: (repeats, 2, faces, attributes),
    every prepared face) and the rows of those faces that are the test faces, in the order of the human ratings."""

    halves: np.ndarray
    test_rows: np.ndarray


@dataclass(frozen=True)
class Samples:
    """r of every resample (resamples, methods, attributes) and, with split halves, the ceiling recomputed on the
    same resample's faces (resamples, attributes)."""

    r: np.ndarray
    ceiling: np.ndarray | None


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
    ceiling_resampled: bool = False


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


def resampled_ceiling(counts: np.ndarray, halves: np.ndarray) -> np.ndarray:
    """(resamples, attributes): the split-half ceiling on each resample's faces (rows of `counts`, weights over the
    faces of `halves`), computed as the baselines stage computes it once: per split the half means' r, stepped up
    (2r / (1 + r)), averaged over the splits, sqrt(max(., 0)). All weights 1 give the baselines' ceiling."""
    repeats, _, faces, attributes = halves.shape
    first, second = (halves[:, k].transpose(1, 0, 2).reshape(faces, repeats * attributes) for k in (0, 1))
    ceiling = np.empty((len(counts), attributes))
    chunk = max(1, CHUNK_CELLS // max(faces, 6 * repeats * attributes))
    for start in range(0, len(counts), chunk):
        r = weighted_pearson(counts[start : start + chunk], first, second).reshape(-1, repeats, attributes)
        with np.errstate(invalid="ignore", divide="ignore"):
            reliability = (2 * r / (1 + r)).mean(axis=1)
        ceiling[start : start + chunk] = np.sqrt(np.clip(reliability, 0.0, None))
    return ceiling


def bootstrap_pearson(
    human: np.ndarray,
    predicted: np.ndarray,
    resamples: int,
    rng: np.random.Generator,
    ceiling: CeilingFaces | None = None,
) -> Samples:
    """human (faces, attributes), predicted (methods, faces, attributes) -> r of every resample, (resamples,
    methods, attributes): each resample's faces are the same for every method and attribute. With `ceiling`, the
    ceiling of every resample too: its test faces drawn as the models' are, its other faces from a child of `rng`
    (so r's resamples are the same with or without it)."""
    methods, faces, attributes = predicted.shape
    if human.shape != (faces, attributes):
        raise DataError(f"human ratings are {human.shape}, predictions {predicted.shape[1:]}: not the same faces")
    columns_human = np.tile(human, (1, methods))
    columns_predicted = predicted.transpose(1, 0, 2).reshape(faces, methods * attributes)
    chunk = max(1, CHUNK_CELLS // max(faces, 1))
    r = np.empty((resamples, methods * attributes))
    ceilings = None
    if ceiling is not None:
        all_faces = ceiling.halves.shape[2]
        if ceiling.halves.shape[3] != attributes or len(ceiling.test_rows) != faces:
            raise DataError(
                f"split halves of {ceiling.halves.shape[2:]} (faces, attributes) with {len(ceiling.test_rows)} test "
                f"faces do not match the {faces} test faces and {attributes} attributes scored"
            )
        other_rows = np.setdiff1d(np.arange(all_faces), ceiling.test_rows)
        other_rng = rng.spawn(1)[0]
        ceilings = np.empty((resamples, attributes))
    for start in range(0, resamples, chunk):
        counts = resample_counts(faces, min(chunk, resamples - start), rng)
        r[start : start + len(counts)] = weighted_pearson(counts, columns_human, columns_predicted)
        if ceiling is not None:
            every_face = np.zeros((len(counts), all_faces))
            every_face[:, ceiling.test_rows] = counts
            every_face[:, other_rows] = resample_counts(len(other_rows), len(counts), other_rng)
            ceilings[start : start + len(counts)] = resampled_ceiling(every_face, ceiling.halves)
    return Samples(r.reshape(resamples, methods, attributes), ceilings)


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
    ceiling_faces: CeilingFaces | None = None,
) -> Intervals:
    """Intervals for the comparison table's method and r/ceiling cells and for every pairwise difference.

    `human`: (test faces, attributes) mean ratings; `predictions`: each method's (test faces, attributes), in the
    table's attribute order. With `ceiling_faces`, r/ceiling divides each resample's r by the ceiling recomputed on
    that resample's faces; without, the ceiling is held fixed and r/ceiling's interval is r's scaled by it. A ratio
    is left out where the table's ceiling is not positive. Means are over the attributes the table has a value for,
    as its mean row.
    """
    attributes = [a for a in table.index if a != MEAN_ROW]
    methods = list(predictions)
    stacked = np.stack([np.asarray(predictions[m], dtype=np.float64) for m in methods])
    rng = np.random.default_rng(settings.seed)
    drawn = bootstrap_pearson(np.asarray(human, dtype=np.float64), stacked, settings.resamples, rng, ceiling_faces)
    scored = table.loc[attributes, methods].notna().to_numpy().T  # (methods, attributes)
    r = np.where(scored, drawn.r, np.nan)
    samples = {m: np.column_stack([r[:, k], mean_over_attributes(r[:, k], scored[k])]) for k, m in enumerate(methods)}
    if ceiling is not None:
        fixed = ceiling.reindex(attributes).where(lambda c: c > 0).to_numpy(dtype=np.float64)
        resampled = fixed if drawn.ceiling is None else np.where(drawn.ceiling > 0, drawn.ceiling, np.nan)
        for k, method in enumerate(methods):
            has_ratio = scored[k] & ~np.isnan(fixed)
            ratios = np.where(has_ratio, r[:, k] / resampled, np.nan)
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
    resampled = ceiling is not None and drawn.ceiling is not None
    return Intervals(low, high, differences, settings, faces=int(human.shape[0]), ceiling_resampled=resampled)


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
    if ceiling_shown and intervals.ceiling_resampled:
        note += (
            " r / ceiling's intervals include the ceiling's own uncertainty: every resample also redraws the faces the "
            "ceiling comes from (all faces with raw ratings: the test faces as drawn above, the others apart) and "
            "recomputes the split-half ceiling on them from the same random splits."
        )
    elif ceiling_shown:
        note += " The human ceiling is held fixed (it comes from every face's raw ratings, not the test faces')."
    return note

