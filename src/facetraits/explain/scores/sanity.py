"""Model-parameter randomization test (Adebayo et al. 2018): a map that survives losing the weights explains nothing."""

from __future__ import annotations

import copy
from collections.abc import Iterator

import numpy as np
import torch
from scipy.stats import rankdata

from facetraits.models.components.net import FaceTraitsNet


def randomized_copy(net: FaceTraitsNet, top_blocks: int, seed: int) -> FaceTraitsNet:
    """A copy whose heads and top `top_blocks` backbone blocks are re-initialized; the rest keeps its weights."""
    clone = copy.deepcopy(net).eval()
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        blocks = list(clone.backbone.blocks)[len(clone.backbone.blocks) - top_blocks :] if top_blocks else []
        for part in [clone.heads, *blocks]:
            for module in part.modules():
                reset = getattr(module, "reset_parameters", None)
                if callable(reset):
                    reset()
    finally:
        torch.random.set_rng_state(generator_state)
    return clone


def _pairs_on_support(first: np.ndarray, second: np.ndarray) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Per face, both flat maps at the pixels non-zero in either: pixels zero in both (the empty background
    of ReLU'd maps) tie in both rankings and would make maps that share nothing else look alike."""
    for a, b in zip(first.reshape(len(first), -1), second.reshape(len(second), -1), strict=True):
        support = (a != 0) | (b != 0)
        yield a[support], b[support]


def _constant(values: np.ndarray) -> bool:
    return not len(values) or values.min() == values.max()


def _rank_correlation(first: np.ndarray, second: np.ndarray) -> float:
    if _constant(first) or _constant(second):
        return float("nan")
    a, b = rankdata(first), rankdata(second)
    a -= a.mean()
    b -= b.mean()
    return float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum()))


def map_rank_correlation(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Spearman correlation between paired maps, one value per face, over pixels non-zero in either map.

    NaN when either map is constant on those pixels.
    """
    return np.array([_rank_correlation(a, b) for a, b in _pairs_on_support(first, second)], dtype=np.float64)


def maps_changed(trained: np.ndarray, randomized: np.ndarray, threshold: float) -> np.ndarray:
    """Per face: 1 where randomizing the model destroyed the map's ranking, 0 where it survived, NaN where
    the trained map is constant (it ranks nothing that could be lost).

    Destroyed: a rank correlation below `threshold`, or a randomized map that is constant (e.g. all zero)
    where the trained one is not: a map the weights can flatten depends on them.
    """
    changed = [
        np.nan if _constant(a) else 1.0 if _constant(b) else float(_rank_correlation(a, b) < threshold)
        for a, b in _pairs_on_support(trained, randomized)
    ]
    return np.array(changed, dtype=np.float64)
