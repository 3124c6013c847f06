"""Model-parameter randomization test (Adebayo et al. 2018): a map that survives losing the weights explains nothing."""

from __future__ import annotations

import copy

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


def map_rank_correlation(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Spearman correlation between paired maps, one value per face (NaN when a map is constant)."""
    a = rankdata(first.reshape(len(first), -1), axis=1)
    b = rankdata(second.reshape(len(second), -1), axis=1)
    a -= a.mean(axis=1, keepdims=True)
    b -= b.mean(axis=1, keepdims=True)
    denominator = np.sqrt((a * a).sum(axis=1) * (b * b).sum(axis=1))
    return np.divide((a * b).sum(axis=1), denominator, out=np.full(len(a), np.nan), where=denominator > 0)
