"""How well people agree with each other: the split-half reliability that bounds any model's correlation.

A face's mean rating is its true impression plus the raters' noise, so no predictor can correlate with
it better than the mean correlates with itself over a fresh panel: r <= sqrt(reliability).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from facetraits.errors import DataError

RATING_COLUMNS = ("id", "attribute", "rating")
MIN_FACES = 3


def split_half_reliability(
    ratings: pd.DataFrame, attributes: Sequence[str], repeats: int, seed: int, min_ratings: int = 2
) -> pd.DataFrame:
    """Spearman-Brown corrected split-half reliability of each attribute's mean rating, over random splits.

    Each repeat splits every face's ratings at random into halves of floor(n/2) and ceil(n/2), correlates
    the half means across faces and steps r up to the full panel (2r / (1 + r)). The corrected values are
    averaged: every random split is an equally valid estimate of the same quantity, so their mean is a
    Monte Carlo estimate of the average over all splits (for exchangeable raters, close to Cronbach's
    alpha) with the split-to-split noise averaged out. Averaging Fisher z instead would change the result
    far less than that noise at hundreds of faces, and plain r keeps the number comparable to the paper's.

    Ratings are split per face, not per rater (a `rater` column is ignored): OMI records no rater ids.
    Rows are sorted (ids as text) before drawing, so the result depends on the ratings, not on their order.
    Returns one row per attribute (in the order given): reliability, ceiling = sqrt(max(reliability, 0)),
    faces (with >= min_ratings ratings) and ratings_per_face (their mean count); an attribute with fewer
    than 3 such faces has NaN reliability.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    if min_ratings < 2:
        raise ValueError(f"min_ratings must be >= 2 (a split needs two halves), got {min_ratings}")
    attributes = list(attributes)
    face, attribute, value = _usable_ratings(ratings, attributes)
    n_faces = int(face.max(initial=-1)) + 1
    face_key = attribute * n_faces + face  # one key per (attribute, face); rows are sorted by it
    enough = np.bincount(face_key)[face_key] >= min_ratings
    keys, group = np.unique(face_key[enough], return_inverse=True)
    value = value[enough]
    group_attribute = keys // n_faces
    size = np.bincount(group, minlength=len(keys))
    half = size // 2
    total = np.bincount(group, weights=value, minlength=len(keys))
    offset_in_group = np.arange(len(group)) - (np.cumsum(size) - size)[group]

    rng = np.random.default_rng(seed)
    corrected = np.empty((repeats, len(attributes)))
    for repeat in range(repeats):
        # rows are sorted by group, so shuffling within groups keeps each group's block in place
        shuffled = np.argsort(group + rng.random(len(group)))
        in_first_half = np.empty(len(group), dtype=bool)
        in_first_half[shuffled] = offset_in_group < half[group]
        first = np.bincount(group, weights=np.where(in_first_half, value, 0.0), minlength=len(keys))
        r = _pearson_by_attribute(first / half, (total - first) / (size - half), group_attribute, len(attributes))
        with np.errstate(divide="ignore"):
            corrected[repeat] = 2 * r / (1 + r)

    faces = np.bincount(group_attribute, minlength=len(attributes))
    with np.errstate(invalid="ignore", divide="ignore"):
        ratings_per_face = np.bincount(group_attribute, weights=size, minlength=len(attributes)) / faces
    reliability = corrected.mean(axis=0)
    return pd.DataFrame(
        {
            "reliability": reliability,
            "ceiling": np.sqrt(np.clip(reliability, 0.0, None)),
            "faces": faces,
            "ratings_per_face": ratings_per_face,
        },
        index=pd.Index(attributes, name="attribute"),
    )


def _usable_ratings(ratings: pd.DataFrame, attributes: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(face code, attribute index, rating) of the non-missing ratings of the wanted attributes, sorted."""
    missing = [c for c in RATING_COLUMNS if c not in ratings.columns]
    if missing:
        raise DataError(f"ratings lack columns {missing}; expected {list(RATING_COLUMNS)}")
    repeated = sorted({a for a in attributes if attributes.count(a) > 1})
    if repeated:
        raise DataError(f"attributes listed more than once: {repeated}")
    present = set(ratings["attribute"].astype(str).unique())
    absent = [a for a in attributes if a not in present]
    if absent:
        raise DataError(f"ratings have no rows for attribute(s) {absent}; present: {sorted(present)}")
    if not pd.api.types.is_numeric_dtype(ratings["rating"]):
        raise DataError(f"ratings.rating must be numeric, got dtype {ratings['rating'].dtype}")
    value = ratings["rating"].to_numpy(dtype=np.float64, na_value=np.nan)
    if np.isinf(value).any():
        raise DataError(f"ratings.rating has infinite values at rows {np.flatnonzero(np.isinf(value))[:5].tolist()}")
    attribute = pd.Categorical(ratings["attribute"].astype(str), categories=attributes).codes.astype(np.int64)
    keep = (attribute >= 0) & ~np.isnan(value)
    face, _ = pd.factorize(ratings["id"].astype(str).to_numpy()[keep], sort=True)
    attribute, value = attribute[keep], value[keep]
    order = np.lexsort((value, face, attribute))
    return face[order].astype(np.int64), attribute[order], value[order]


def _pearson_by_attribute(x: np.ndarray, y: np.ndarray, label: np.ndarray, n_labels: int) -> np.ndarray:
    """Pearson r of x and y within each label; NaN where fewer than 3 faces or no variance."""
    n = np.bincount(label, minlength=n_labels).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        dx = x - (np.bincount(label, weights=x, minlength=n_labels) / n)[label]
        dy = y - (np.bincount(label, weights=y, minlength=n_labels) / n)[label]
        sxy = np.bincount(label, weights=dx * dy, minlength=n_labels)
        sxx = np.bincount(label, weights=dx * dx, minlength=n_labels)
        syy = np.bincount(label, weights=dy * dy, minlength=n_labels)
        r = sxy / np.sqrt(sxx * syy)
    return np.where(n >= MIN_FACES, r, np.nan)
