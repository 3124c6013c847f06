"""How well people agree with each other: the split-half reliability that bounds any model's correlation.

A face's mean rating is its true impression plus the raters' noise, so no predictor can correlate with
it better than the mean correlates with itself over a fresh panel: r <= sqrt(reliability).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from facetraits.errors import DataError

RATING_COLUMNS = ("id", "attribute", "rating")
MIN_FACES = 3
SPLIT_HALVES_FILE = "split_halves.npy"  # in the baselines stage's folder: written there, resampled by the report


@dataclass(frozen=True)
class SplitHalves:
    """Every face's mean rating in the two halves of each random split: what the reliability is computed from, and
    what a bootstrap resamples faces of to give the ceiling its own interval (report/intervals.py).

    means: (repeats, 2, faces, attributes), NaN where a face has fewer than min_ratings ratings of an attribute;
    counts: (faces, attributes) ratings used; faces are `ids`, sorted as text.
    """

    ids: np.ndarray
    attributes: tuple[str, ...]
    means: np.ndarray
    counts: np.ndarray


def split_halves(
    ratings: pd.DataFrame, attributes: Sequence[str], repeats: int, seed: int, min_ratings: int = 2
) -> SplitHalves:
    """Each repeat splits every face's ratings at random into halves of floor(n/2) and ceil(n/2) ratings.

    Ratings are split per face, not per rater (a `rater` column is ignored): OMI records no rater ids.
    Rows are sorted (ids as text) before drawing, so the result depends on the ratings, not on their order.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    if min_ratings < 2:
        raise ValueError(f"min_ratings must be >= 2 (a split needs two halves), got {min_ratings}")
    attributes = list(attributes)
    ids, face, attribute, value = _usable_ratings(ratings, attributes)
    n_faces = len(ids)
    face_key = attribute * n_faces + face  # one key per (attribute, face); rows are sorted by it
    counts = np.bincount(face_key, minlength=n_faces * len(attributes))
    enough = counts[face_key] >= min_ratings
    keys, group = np.unique(face_key[enough], return_inverse=True)
    value = value[enough]
    size = np.bincount(group, minlength=len(keys))
    half = size // 2
    total = np.bincount(group, weights=value, minlength=len(keys))
    offset_in_group = np.arange(len(group)) - (np.cumsum(size) - size)[group]

    rng = np.random.default_rng(seed)
    means = np.full((repeats, 2, len(attributes) * n_faces), np.nan)
    for repeat in range(repeats):
        # rows are sorted by group, so shuffling within groups keeps each group's block in place
        shuffled = np.argsort(group + rng.random(len(group)))
        in_first_half = np.empty(len(group), dtype=bool)
        in_first_half[shuffled] = offset_in_group < half[group]
        first = np.bincount(group, weights=np.where(in_first_half, value, 0.0), minlength=len(keys))
        means[repeat, 0, keys] = first / half
        means[repeat, 1, keys] = (total - first) / (size - half)
    by_face = means.reshape(repeats, 2, len(attributes), n_faces).transpose(0, 1, 3, 2)
    return SplitHalves(ids, tuple(attributes), by_face, counts.reshape(len(attributes), n_faces).T)


def split_half_reliability(
    ratings: pd.DataFrame, attributes: Sequence[str], repeats: int, seed: int, min_ratings: int = 2
) -> pd.DataFrame:
    """Spearman-Brown corrected split-half reliability of each attribute's mean rating, over random splits.

    Each repeat (split_halves) correlates the half means across faces and steps r up to the full panel
    (2r / (1 + r)). The corrected values are averaged: every random split is an equally valid estimate of the same
    quantity, so their mean is a Monte Carlo estimate of the average over all splits (for exchangeable raters, close
    to Cronbach's alpha) with the split-to-split noise averaged out. Averaging Fisher z instead would change the
    result far less than that noise at hundreds of faces, and plain r keeps the number comparable to the paper's.

    Returns one row per attribute (in the order given): reliability, ceiling = sqrt(max(reliability, 0)),
    faces (with >= min_ratings ratings) and ratings_per_face (their mean count); an attribute with fewer
    than 3 such faces has NaN reliability.
    """
    return reliability_table(split_halves(ratings, attributes, repeats, seed, min_ratings))


def reliability_table(halves: SplitHalves) -> pd.DataFrame:
    """split_half_reliability's table from the half means."""
    first, second = halves.means[:, 0], halves.means[:, 1]  # (repeats, faces, attributes)
    split = ~np.isnan(first[0])
    faces = split.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        dx = np.where(split, first - np.nansum(first, axis=1, keepdims=True) / faces, 0.0)
        dy = np.where(split, second - np.nansum(second, axis=1, keepdims=True) / faces, 0.0)
        r = (dx * dy).sum(axis=1) / np.sqrt((dx * dx).sum(axis=1) * (dy * dy).sum(axis=1))
        r = np.where(faces >= MIN_FACES, r, np.nan)
        reliability = (2 * r / (1 + r)).mean(axis=0)
        ratings_per_face = np.where(split, halves.counts, 0).sum(axis=0) / faces
    return pd.DataFrame(
        {
            "reliability": reliability,
            "ceiling": np.sqrt(np.clip(reliability, 0.0, None)),
            "faces": faces,
            "ratings_per_face": ratings_per_face,
        },
        index=pd.Index(halves.attributes, name="attribute"),
    )


def write_split_halves(halves: SplitHalves, ids: Sequence[str], attributes: Sequence[str], path: Path) -> None:
    """The half means as one .npy, (repeats, 2, faces, attributes) in the given (prepared) face and attribute order,
    NaN for faces or attributes without split ratings. np.save: identical runs write identical bytes."""
    rows = pd.Index(halves.ids).get_indexer(list(ids))
    columns = pd.Index(halves.attributes).get_indexer(list(attributes))
    dense = np.full((*halves.means.shape[:2], len(rows), len(columns)), np.nan)
    found = np.ix_(rows >= 0, columns >= 0)
    dense[:, :, found[0], found[1]] = halves.means[:, :, rows[rows >= 0]][..., columns[columns >= 0]]
    np.save(path, dense)


def read_split_halves(path: Path, faces: int, attributes: int) -> np.ndarray | None:
    """write_split_halves' array, or None where the baselines stage wrote none (no raw ratings)."""
    if not path.is_file():
        return None
    means = np.load(path)
    if means.ndim != 4 or means.shape[1:2] + means.shape[2:] != (2, faces, attributes):
        raise DataError(
            f"{path}: split halves of shape {means.shape}, expected (repeats, 2, {faces}, {attributes}) for the "
            "prepared faces and attributes; the file is stale: rerun the baselines stage (dvc repro baselines)"
        )
    return means


def _usable_ratings(
    ratings: pd.DataFrame, attributes: list[str]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(face ids, then per rating: face code, attribute index, rating) of the non-missing ratings of the wanted
    attributes, sorted."""
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
    face, ids = pd.factorize(ratings["id"].astype(str).to_numpy()[keep], sort=True)
    attribute, value = attribute[keep], value[keep]
    order = np.lexsort((value, face, attribute))
    return np.asarray(ids), face[order].astype(np.int64), attribute[order], value[order]
