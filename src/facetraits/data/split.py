"""Deterministic train/val/test assignment that never splits an identity."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

SPLITS = ("train", "val", "test")


def assign_splits(groups: Sequence[str], fractions: tuple[float, float, float], seed: int) -> np.ndarray:
    """Split label per face; groups are shuffled by seed and filled in order until each split's share is met.

    Groups are sorted before shuffling so the result depends on the set of faces, not their row order.
    """
    groups = np.asarray(groups, dtype=str)
    names, inverse, counts = np.unique(groups, return_inverse=True, return_counts=True)
    order = np.random.default_rng(seed).permutation(len(names))
    before = np.cumsum(counts[order]) - counts[order]
    bounds = np.cumsum(fractions)[:-1] * len(groups)
    split_of_shuffled = np.searchsorted(bounds, before + counts[order] / 2, side="right")
    split_of_group = np.empty(len(names), dtype=int)
    split_of_group[order] = split_of_shuffled
    return np.asarray(SPLITS)[split_of_group[inverse]]
