"""How far an explanation score can be trusted: bootstrap intervals over the scored faces and a test of the
randomization check, so a score over a dozen faces is reported with its spread instead of as a bare mean."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.stats import wilcoxon


def mean_interval(
    groups: Sequence[np.ndarray], confidence: float, resamples: int, seed: int
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean over groups of each group's mean over its faces (one group per
    attribute: the faces of each are resampled on their own, as the scores were drawn). NaN values (a score
    undefined for a face) are left out; (NaN, NaN) when no group has a defined value."""
    defined = [g[np.isfinite(g)] for g in map(np.asarray, groups)]
    defined = [g for g in defined if len(g)]
    if not defined:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = np.stack([g[rng.integers(0, len(g), size=(resamples, len(g)))].mean(axis=1) for g in defined])
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(means.mean(axis=0), [tail, 100 - tail])
    return float(low), float(high)


def randomization_p(rank_correlations: np.ndarray, threshold: float) -> float:
    """One-sided Wilcoxon signed-rank p that the maps' rank correlation with the randomized model's lies below
    `threshold` (Adebayo et al.'s check as a test over faces rather than a share passed). NaN for fewer than
    two defined faces."""
    values = np.asarray(rank_correlations, dtype=np.float64)
    values = values[np.isfinite(values)] - threshold
    if len(values) < 2 or not np.any(values):
        return float("nan")
    return float(wilcoxon(values, alternative="less", zero_method="zsplit").pvalue)
