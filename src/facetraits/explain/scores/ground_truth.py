"""Agreement with known relevant pixels (Arras et al. 2022, CLEVR-XAI), for data whose generator is known."""

from __future__ import annotations

import numpy as np


def relevance_mass_accuracy(maps: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Share of each map's total (non-negative) relevance that falls inside the mask; NaN for an all-zero map."""
    relevance = np.clip(maps, 0, None).reshape(len(maps), -1).astype(np.float64)
    inside = (relevance * masks.reshape(len(masks), -1)).sum(axis=1)
    total = relevance.sum(axis=1)
    return np.divide(inside, total, out=np.full(len(maps), np.nan), where=total > 0)


def relevance_rank_accuracy(maps: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Share of the K highest-relevance pixels that lie inside the mask, K being the mask's size.

    Pixels above the K-th highest value count fully; those tied with it (a ReLU'd map's zero plateau)
    share the remaining slots in proportion to how many of them are masked: the exact expectation under
    random tie-breaking, where a stable sort would read the plateau top-left first. NaN for a constant
    map (it ranks nothing) or an empty mask.
    """
    flat_maps = maps.reshape(len(maps), -1)
    flat_masks = masks.reshape(len(masks), -1).astype(bool)
    accuracy = np.full(len(maps), np.nan)
    for face, (relevance, mask) in enumerate(zip(flat_maps, flat_masks, strict=True)):
        size = int(mask.sum())
        if size and relevance.min() < relevance.max():
            kth = np.partition(relevance, -size)[-size]
            above, tied = relevance > kth, relevance == kth
            slots = size - int(above.sum())
            accuracy[face] = (mask[above].sum() + slots * mask[tied].mean()) / size
    return accuracy


def mask_area_fraction(masks: np.ndarray) -> np.ndarray:
    """What a uniformly random map scores on both accuracies: the chance level to compare against."""
    return masks.reshape(len(masks), -1).astype(bool).mean(axis=1)
