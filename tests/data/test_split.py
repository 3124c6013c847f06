import numpy as np

from facetraits.data.split import assign_splits


def test_default_fractions_give_exact_counts_for_singletons() -> None:
    splits = assign_splits([f"f{i}" for i in range(100)], (0.64, 0.16, 0.20), seed=1)
    assert {s: int((splits == s).sum()) for s in ("train", "val", "test")} == {"train": 64, "val": 16, "test": 20}


def test_same_seed_same_split_regardless_of_row_order() -> None:
    groups = [f"f{i}" for i in range(50)]
    first = dict(zip(groups, assign_splits(groups, (0.6, 0.2, 0.2), seed=3), strict=True))
    reversed_groups = groups[::-1]
    second = dict(zip(reversed_groups, assign_splits(reversed_groups, (0.6, 0.2, 0.2), seed=3), strict=True))
    assert first == second
    other = dict(zip(groups, assign_splits(groups, (0.6, 0.2, 0.2), seed=4), strict=True))
    assert other != first


def test_identities_never_cross_splits() -> None:
    rng = np.random.default_rng(0)
    groups = [f"person{g}" for g in rng.integers(0, 30, size=200)]
    splits = assign_splits(groups, (0.64, 0.16, 0.20), seed=0)
    for group in set(groups):
        assert len({s for g, s in zip(groups, splits, strict=True) if g == group}) == 1
    shares = [np.mean(splits == s) for s in ("train", "val", "test")]
    assert abs(shares[0] - 0.64) < 0.12 and all(share > 0 for share in shares)


def test_zero_test_fraction_leaves_test_empty() -> None:
    splits = assign_splits([str(i) for i in range(40)], (0.8, 0.2, 0.0), seed=0)
    assert set(splits) == {"train", "val"}
