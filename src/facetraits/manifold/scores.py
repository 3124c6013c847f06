"""How faithful a map is to its source, and how well the attributes can be read off it.

The paper judges maps by eye (points coloured by attractive > unattractive, ...); these scores put a
number on each judgement so maps of backbone features, predictions and human ratings can be compared.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
from sklearn.metrics import euclidean_distances, silhouette_score
from sklearn.model_selection import KFold, cross_val_predict
from sklearn.neighbors import KNeighborsRegressor, NearestNeighbors
from sklearn.preprocessing import StandardScaler

from facetraits.batching import batches
from facetraits.errors import ConfigError, DataError

LABEL_SEPARATOR = "_vs_"
MEDIAN = "median"
# Opposites that share no "un" prefix, as face-perception studies pair them; the first of a pair is the
# one whose being rated higher sets the label. X / unX pairs are found without this table.
CLASSIC_ANTONYMS: tuple[tuple[str, str], ...] = (
    ("dominant", "submissive"),
    ("happy", "sad"),
    ("friendly", "hostile"),
    ("warm", "cold"),
    ("competent", "incompetent"),
    ("honest", "dishonest"),
    ("confident", "insecure"),
    ("masculine", "feminine"),
)
# Faces whose source distances are held at once by map_trustworthiness: 256 x N float64 (20 MB at 10,000 faces).
TRUST_BLOCK = 256


def map_trustworthiness(
    high: np.ndarray, low: np.ndarray, n_neighbors: int, max_queries: int = 1000, seed: int = 0
) -> float:
    """Trustworthiness of `low` against the standardized `high` (1 = no false neighbours in the map), as sklearn's.

    sklearn's form ranks every face's distances to every other face: rows squared in time and memory. Here
    each face's penalty (how far back in the source its map neighbours rank) is computed from its distances
    alone, a block of faces at a time, so memory stays at a block of rows; with N <= `max_queries` every face
    is a query and the score is sklearn's, and above it the mean penalty over a seeded sample of that many
    faces estimates it without bias (cost linear in N; standard error 0.002-0.003 at 300 queries on the tests'
    maps, shrinking as 1 / sqrt(queries)).
    """
    low = np.asarray(low, dtype=np.float64)
    faces = len(low)
    if len(high) != faces:
        raise DataError(f"map has {faces} rows but its source has {len(high)}")
    if not 1 <= n_neighbors < faces / 2:
        raise DataError(f"trustworthiness needs 1 <= n_neighbors < rows / 2 = {faces / 2}, got {n_neighbors}")
    queries = np.arange(faces)
    if faces > max_queries:
        queries = np.sort(np.random.default_rng(seed).choice(faces, size=max_queries, replace=False))
    # Distances between standardized rows: centring cancels, so dividing by each column's sd is enough.
    matrix = np.asarray(high)
    if matrix.ndim != 2 or not np.isfinite(matrix).all():
        raise DataError(f"the map's source must be a finite (faces, features) matrix, got shape {matrix.shape}")
    scale = StandardScaler().fit(matrix).scale_
    map_neighbours = NearestNeighbors(n_neighbors=n_neighbors).fit(low).kneighbors(return_distance=False)[queries]
    penalty = 0.0
    for part in batches(len(queries), TRUST_BLOCK):
        rows = queries[part]
        distances = np.concatenate(
            [
                euclidean_distances(matrix[rows] / scale, matrix[other] / scale, squared=True)
                for other in batches(faces, TRUST_BLOCK * 8)
            ],
            axis=1,
        )
        distances[np.arange(len(rows)), rows] = np.inf  # a face is not its own neighbour
        to_neighbours = np.take_along_axis(distances, map_neighbours[part], axis=1)
        # rank of each map neighbour among the face's source neighbours (1 = nearest)
        ranks = 1 + (distances[:, None, :] < to_neighbours[:, :, None]).sum(axis=2)
        penalty += float(np.clip(ranks - n_neighbors, 0, None).sum())
    penalty *= faces / len(queries)
    return 1.0 - penalty * 2.0 / (faces * n_neighbors * (2.0 * faces - 3.0 * n_neighbors - 1.0))


def knn_recoverability(coords: np.ndarray, targets: np.ndarray, n_neighbors: int, folds: int, seed: int) -> np.ndarray:
    """Per attribute, Pearson r of out-of-fold kNN predictions from map position against the attribute.

    High r means the attribute changes smoothly over the map, which is what a colour gradient shows by eye.
    Faces without the attribute are dropped for it; an attribute rated on too few faces to fill `folds`
    training sets of `n_neighbors` faces, or constant, gets NaN.
    """
    coords = np.asarray(coords, dtype=np.float64)
    targets = np.asarray(targets, dtype=np.float64)
    if targets.ndim != 2 or len(targets) != len(coords):
        raise DataError(f"targets must be ({len(coords)}, attributes) to match the map, got shape {targets.shape}")
    if folds < 2 or n_neighbors < 1:
        raise ConfigError(f"knn recoverability needs folds >= 2 and n_neighbors >= 1, got {folds} and {n_neighbors}")
    splitter = KFold(n_splits=folds, shuffle=True, random_state=seed)
    scores = np.full(targets.shape[1], np.nan)
    for column, target in enumerate(targets.T):
        rated = np.isfinite(target)
        faces = int(rated.sum())
        if faces < folds or faces - math.ceil(faces / folds) < n_neighbors:
            continue
        model = KNeighborsRegressor(n_neighbors=n_neighbors)
        predicted = cross_val_predict(model, coords[rated], target[rated], cv=splitter)
        scores[column] = _pearson(predicted, target[rated])
    return scores


def antonym_pairs(attributes: Sequence[str]) -> list[tuple[str, str]]:
    """(positive, negative) pairs among `attributes`: every X / unX, then CLASSIC_ANTONYMS; names match case-blind."""
    by_name = {name.lower(): name for name in attributes}
    prefixed = [(name, by_name[f"un{name.lower()}"]) for name in attributes if f"un{name.lower()}" in by_name]
    classic = [(by_name[a], by_name[b]) for a, b in CLASSIC_ANTONYMS if a in by_name and b in by_name]
    return prefixed + [pair for pair in classic if pair not in prefixed]


def pair_labels(values: pd.DataFrame, pairs: Sequence[tuple[str, str]]) -> pd.DataFrame:
    """One nullable boolean column `positive_vs_negative` per pair: rated more positive than negative (ties: False).

    Faces missing either rating get NA, so they are left out of the silhouette rather than counted as False.
    """
    _require_columns(values, [name for pair in pairs for name in pair])
    return pd.DataFrame(
        {
            f"{positive}{LABEL_SEPARATOR}{negative}": _nullable_greater(values[positive], values[negative])
            for positive, negative in pairs
        },
        index=values.index,
    )


def median_split_labels(values: pd.DataFrame, attributes: Sequence[str]) -> pd.DataFrame:
    """One nullable boolean column `attribute_vs_median` per attribute: above its median; for sets without antonyms."""
    _require_columns(values, attributes)
    return pd.DataFrame(
        {
            f"{name}{LABEL_SEPARATOR}{MEDIAN}": _nullable_greater(
                values[name], pd.Series(values[name].median(), index=values.index)
            )
            for name in attributes
        },
        index=values.index,
    )


def silhouette_by_label(coords: np.ndarray, labels: pd.DataFrame, max_rows: int = 2000, seed: int = 0) -> pd.DataFrame:
    """One row per label column: label, silhouette, faces (labelled), positive_share and why a score is NaN.

    A silhouette measures how well the label's groups separate in the map (-1..1; near 0 = intermixed).
    Missing labels are left out. Above `max_rows` labelled faces a seeded subsample is scored: the full
    score costs rows squared (3.6 s at 10k faces, per label and map), the subsample's is a mean over
    2000 faces of the same per-face silhouettes and differs from it by about 0.01.
    """
    rows = []
    for name in labels.columns:
        known = labels[name].dropna().astype(bool)
        score, reason = _silhouette_or_reason(coords, labels[name], max_rows, seed)
        share = float(known.mean()) if len(known) else float("nan")
        rows.append(
            {"label": name, "silhouette": score, "faces": len(known), "positive_share": share, "reason": reason}
        )
    return pd.DataFrame(rows, columns=["label", "silhouette", "faces", "positive_share", "reason"])


def _silhouette_or_reason(
    coords: np.ndarray, labels: np.ndarray | pd.Series, max_rows: int, seed: int
) -> tuple[float, str]:
    coords = np.asarray(coords, dtype=np.float64)
    labels = pd.Series(labels).reset_index(drop=True)
    if len(labels) != len(coords):
        raise DataError(f"labels has {len(labels)} rows but the map has {len(coords)}")
    known = np.flatnonzero(labels.notna().to_numpy())
    if len(known) > max_rows:
        known = np.sort(np.random.default_rng(seed).choice(known, size=max_rows, replace=False))
    classes = labels[known].nunique()
    if classes < 2:
        return float("nan"), f"{len(known)} labelled faces fall in {classes} class(es); two are needed"
    if len(known) <= classes:
        return float("nan"), f"only {len(known)} labelled faces for {classes} classes"
    return float(silhouette_score(coords[known], labels[known].to_numpy())), ""


def _nullable_greater(left: pd.Series, right: pd.Series) -> pd.Series:
    greater = (left > right).astype("boolean")
    greater[left.isna() | right.isna()] = pd.NA
    return greater


def _require_columns(values: pd.DataFrame, names: Sequence[str]) -> None:
    missing = sorted(set(names) - set(values.columns))
    if missing:
        raise DataError(f"attribute values have no column(s) {missing}; columns are {list(values.columns)}")


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    if np.std(a) == 0 or np.std(b) == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])
