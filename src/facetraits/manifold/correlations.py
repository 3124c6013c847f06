"""Which attributes go together, in human ratings and in the model's predictions, and how alike the two patterns are."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from scipy.cluster.hierarchy import leaves_list, linkage
from scipy.spatial.distance import squareform
from scipy.stats import pearsonr, spearmanr

from facetraits.errors import DataError


def attribute_correlations(values: pd.DataFrame) -> pd.DataFrame:
    """Pearson r between attribute columns over the faces rated on both (pairwise-complete); NaN if undefined."""
    non_numeric = [name for name in values.columns if not pd.api.types.is_numeric_dtype(values[name])]
    if non_numeric:
        raise DataError(f"attribute values must be numeric; column(s) {non_numeric} are not")
    return values.astype(np.float64).corr(method="pearson", min_periods=3)


def cluster_order(corr: pd.DataFrame) -> list[str]:
    """Attributes ordered so correlated ones sit together: average linkage on 1 - r with optimal leaf ordering.

    1 - r (not 1 - |r|) keeps antonyms apart: each block holds attributes that rise together.
    An undefined r (a constant attribute) counts as 0, unrelated.
    """
    names = _square_names(corr)
    if len(names) <= 2:
        return names
    distance = 1 - np.nan_to_num(corr.to_numpy(dtype=np.float64), nan=0.0)
    distance = np.clip((distance + distance.T) / 2, 0, 2)
    np.fill_diagonal(distance, 0)
    tree = linkage(squareform(distance, checks=False), method="average", optimal_ordering=True)
    return [names[i] for i in leaves_list(tree)]


def matrix_agreement(
    human: pd.DataFrame, model: pd.DataFrame, permutations: int = 999, seed: int = 0
) -> dict[str, Any]:
    """How alike two attribute correlation matrices are: Pearson and Spearman r of their upper triangles.

    Entries of one matrix share attributes and are not independent, so the usual p-values are too small;
    the Mantel test instead permutes the model's attribute labels (rows and columns together) and
    counts permuted r >= observed r (one-sided: related matrices agree positively).
    """
    names = _square_names(human)
    if sorted(_square_names(model)) != sorted(names):
        raise DataError(f"model correlations cover {list(model.columns)} but human ones cover {names}")
    first = human.to_numpy(dtype=np.float64)
    second = model.loc[names, names].to_numpy(dtype=np.float64)
    upper = np.triu_indices(len(names), k=1)
    x, y = first[upper], second[upper]
    both = np.isfinite(x) & np.isfinite(y)
    if both.sum() < 3 or np.std(x[both]) == 0 or np.std(y[both]) == 0:
        raise DataError(
            f"{both.sum()} attribute pairs have a correlation in both matrices; at least 3, not all equal, are needed"
        )
    observed = _upper_pearson(first, second, upper)
    rng = np.random.default_rng(seed)
    permuted = np.array(
        [
            _upper_pearson(first, second[np.ix_(order, order)], upper)
            for order in (rng.permutation(len(names)) for _ in range(permutations))
        ]
    )
    # A permutation that only swaps interchangeable attributes reproduces r up to rounding; it must count as equal.
    exceed = int(np.sum(permuted >= observed - 1e-12))
    return {
        "pearson": observed,
        "spearman": float(spearmanr(x[both], y[both]).statistic),
        "pairs": int(both.sum()),
        "mantel_p": (exceed + 1) / (permutations + 1),
        "permutations": permutations,
    }


def _upper_pearson(first: np.ndarray, second: np.ndarray, upper: tuple[np.ndarray, np.ndarray]) -> float:
    x, y = first[upper], second[upper]
    both = np.isfinite(x) & np.isfinite(y)
    if both.sum() < 3 or np.std(x[both]) == 0 or np.std(y[both]) == 0:
        return float("nan")
    return float(pearsonr(x[both], y[both]).statistic)


def _square_names(corr: pd.DataFrame) -> list[str]:
    names = [str(name) for name in corr.columns]
    if [str(name) for name in corr.index] != names:
        raise DataError(f"correlation matrix rows {list(corr.index)} must be its columns {names}, in the same order")
    return names
