import itertools

import numpy as np
import pandas as pd
import pytest

from facetraits.errors import DataError
from facetraits.manifold.correlations import attribute_correlations, cluster_order, matrix_agreement


def block_ratings(rows: int, seed: int, noise: float = 0.6) -> pd.DataFrame:
    """Three blocks of three attributes, each block driven by its own factor; columns in shuffled order."""
    rng = np.random.default_rng(seed)
    factors = rng.normal(size=(rows, 3))
    columns = {
        f"{block}{k}": factors[:, i] + noise * rng.normal(size=rows) for i, block in enumerate("abc") for k in range(3)
    }
    values = pd.DataFrame(columns)
    return values[list(rng.permutation(values.columns))]


def test_correlations_are_pairwise_complete() -> None:
    values = block_ratings(80, seed=0)
    values.iloc[:10, 0] = np.nan
    values.iloc[5:20, 1] = np.nan
    corr = attribute_correlations(values)
    both = values.iloc[:, [0, 1]].dropna()
    assert corr.iloc[0, 1] == pytest.approx(np.corrcoef(both.iloc[:, 0], both.iloc[:, 1])[0, 1])
    assert list(corr.columns) == list(values.columns) and list(corr.index) == list(values.columns)
    with pytest.raises(DataError, match="group"):
        attribute_correlations(values.assign(group="x"))


def test_cluster_order_puts_each_block_together_deterministically() -> None:
    corr = attribute_correlations(block_ratings(200, seed=1))
    order = cluster_order(corr)
    assert sorted(order) == sorted(corr.columns)
    assert [len(list(run)) for _, run in itertools.groupby(name[0] for name in order)] == [3, 3, 3]
    assert cluster_order(corr) == order


def test_identical_matrices_agree_perfectly() -> None:
    corr = attribute_correlations(block_ratings(100, seed=2))
    agreement = matrix_agreement(corr, corr.iloc[::-1, ::-1], permutations=199, seed=0)
    assert agreement["pearson"] == pytest.approx(1.0)
    assert agreement["spearman"] == pytest.approx(1.0)
    assert agreement["pairs"] == 36
    assert agreement["mantel_p"] <= 0.05


def test_mantel_p_is_small_for_related_matrices_only() -> None:
    human = attribute_correlations(block_ratings(150, seed=3))
    related = attribute_correlations(block_ratings(150, seed=4, noise=1.2)).loc[human.columns, human.columns]
    rng = np.random.default_rng(5)
    unrelated = attribute_correlations(pd.DataFrame(rng.normal(size=(150, 9)), columns=human.columns))
    close = matrix_agreement(human, related, permutations=499, seed=0)
    far = matrix_agreement(human, unrelated, permutations=499, seed=0)
    assert close["pearson"] > 0.8 and close["mantel_p"] < 0.01
    assert abs(far["pearson"]) < 0.4 and far["mantel_p"] > 0.1
    assert far == matrix_agreement(human, unrelated, permutations=499, seed=0)


def test_agreement_needs_the_same_attributes() -> None:
    corr = attribute_correlations(block_ratings(50, seed=0))
    with pytest.raises(DataError, match="cover"):
        matrix_agreement(corr, corr.iloc[:-1, :-1])
