"""Linear probe: closed-form ridge regression per attribute on frozen, standardized backbone features.

One eigendecomposition of the train features' Gram matrix gives the ridge solution for every penalty and attribute at once; each
attribute keeps the penalty with the best validation Pearson r. Several feature blocks (the ImageNet backbone's and
dlib's face features) are fused by weighting each standardized block: one eigendecomposition per weighting, the
weighting with the best mean validation r kept. The fitted map is folded into a plain linear head, so the probe is
saved and used as any other model of the project.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from facetraits.models.components.heads import LinearHeads
from facetraits.numbers import pearson_columns


@dataclass(frozen=True)
class RidgeProbe:
    """z-unit predictions = features @ weight.T + bias, on raw (unstandardized) features."""

    weight: np.ndarray  # (A, D)
    bias: np.ndarray  # (A,)
    alpha: np.ndarray  # (A,) the penalty chosen per attribute
    val_pearson: np.ndarray  # (A, len(alphas)) validation r of every penalty, the evidence for the choice
    block_weights: tuple[float, ...] = (1.0,)  # each feature block's weight on standardized features, chosen on val

    def predict(self, features: np.ndarray) -> np.ndarray:
        return features @ self.weight.T + self.bias

    def load_into(self, heads: LinearHeads) -> None:
        with torch.no_grad():
            heads.linear.weight.copy_(torch.from_numpy(self.weight))
            heads.linear.bias.copy_(torch.from_numpy(self.bias))


def _ridge_coefficients(features: np.ndarray, targets: np.ndarray, alphas: np.ndarray) -> np.ndarray:
    """(len(alphas), D, A) ridge coefficients of centred targets on features with zero column means.

    One eigendecomposition of the smaller Gram matrix serves every penalty: with fewer faces than features
    (the usual case) the n x n one, in the dual form w = X^T (X X^T + a I)^-1 y.
    """
    inverse = lambda eigenvalues: 1.0 / (np.maximum(eigenvalues, 0.0)[None, :] + alphas[:, None])  # noqa: E731
    if features.shape[0] <= features.shape[1]:
        eigenvalues, vectors = np.linalg.eigh(features @ features.T)
        dual = np.einsum("nk,lk,ka->lna", vectors, inverse(eigenvalues), vectors.T @ targets, optimize=True)
        return np.einsum("nd,lna->lda", features, dual, optimize=True)
    eigenvalues, vectors = np.linalg.eigh(features.T @ features)
    return np.einsum(
        "dk,lk,ka->lda", vectors, inverse(eigenvalues), vectors.T @ (features.T @ targets), optimize=True
    )


@dataclass(frozen=True)
class _RidgePath:
    """Ridge fits for several penalties at once, on features standardized with their own mean and scale."""

    mean: np.ndarray  # (D,)
    scale: np.ndarray  # (D,)
    coefficients: np.ndarray  # (len(alphas), D, A) on standardized features
    intercepts: np.ndarray  # (len(alphas), A)

    def predict(self, features: np.ndarray) -> np.ndarray:
        """(len(alphas), N, A)"""
        standardized = (np.asarray(features, dtype=np.float64) - self.mean) / self.scale
        return np.einsum("nd,lda->lna", standardized, self.coefficients, optimize=True) + self.intercepts[:, None, :]

    def probe(
        self, chosen: np.ndarray, alphas: np.ndarray, val_pearson: np.ndarray, block_weights: tuple[float, ...] = (1.0,)
    ) -> RidgeProbe:
        """The probe whose attribute a uses penalty alphas[chosen[a]], folded back onto raw features."""
        attributes = np.arange(len(chosen))
        weight = self.coefficients[chosen, :, attributes] / self.scale  # (A, D)
        return RidgeProbe(
            weight=weight.astype(np.float32),
            bias=(self.intercepts[chosen, attributes] - weight @ self.mean).astype(np.float32),
            alpha=alphas[chosen],
            val_pearson=val_pearson,
            block_weights=block_weights,
        )


def _column_weights(block_widths: Sequence[int], block_weights: Sequence[float]) -> np.ndarray | None:
    """Each feature column's weight, its block's; None for one block (plain standardization, as before fusion)."""
    if len(block_widths) != len(block_weights):
        raise ValueError(f"{len(block_widths)} feature blocks but {len(block_weights)} block weights")
    return None if len(block_widths) == 1 else np.repeat(np.asarray(block_weights, dtype=np.float64), block_widths)


def _ridge_path(
    features: np.ndarray, targets: np.ndarray, alphas: np.ndarray, column_weights: np.ndarray | None = None
) -> _RidgePath:
    """Targets may hold NaN (an unrated face): each attribute is fitted on the faces it has. Standardized columns
    are multiplied by `column_weights`: a weight w shrinks that column's penalty by w squared."""
    x = np.asarray(features, dtype=np.float64)
    y = np.asarray(targets, dtype=np.float64)
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    scale = np.where(scale > 1e-12, scale, 1.0)
    if column_weights is not None:
        scale = scale / column_weights
    standardized = (x - mean) / scale
    n_attributes = y.shape[1]
    coefficients = np.zeros((len(alphas), x.shape[1], n_attributes))
    intercepts = np.zeros((len(alphas), n_attributes))
    present = ~np.isnan(y)
    patterns: dict[bytes, list[int]] = {}
    for column in range(n_attributes):
        patterns.setdefault(present[:, column].tobytes(), []).append(column)
    for columns in patterns.values():
        rows = present[:, columns[0]]
        # rows missing some attributes get their own column means, so each fit is a true intercept-only centring
        rows_mean = standardized[rows].mean(axis=0)
        rated = y[np.ix_(rows, columns)]
        coefficients[:, :, columns] = _ridge_coefficients(
            standardized[rows] - rows_mean, rated - rated.mean(axis=0), alphas
        )
        intercepts[:, columns] = rated.mean(axis=0) - np.einsum("d,ldc->lc", rows_mean, coefficients[:, :, columns])
    return _RidgePath(mean=mean, scale=scale, coefficients=coefficients, intercepts=intercepts)


def fit_ridge_probe(
    train_features: np.ndarray,
    train_targets: np.ndarray,
    val_features: np.ndarray,
    val_targets: np.ndarray,
    alphas: Sequence[float],
    block_widths: Sequence[int] | None = None,
    weight_grid: Sequence[float] = (1.0,),
) -> RidgeProbe:
    """Per attribute: ridge on standardized features, the penalty chosen by validation Pearson r.

    Features may be several blocks side by side (`block_widths` columns each, the first the reference): every
    combination of `weight_grid` factors for the other blocks is fitted, and the one whose attributes reach the
    best mean validation r is kept. Targets may hold NaN (an unrated face): each attribute is fitted on the train
    faces it has.
    """
    alphas = np.asarray(sorted(alphas), dtype=np.float64)
    block_widths = [train_features.shape[1]] if block_widths is None else list(block_widths)
    val_targets = np.asarray(val_targets, dtype=np.float64)
    best_probe, best_score = None, -np.inf
    for others in itertools.product(sorted(set(weight_grid)), repeat=len(block_widths) - 1):
        block_weights = (1.0, *others)
        path = _ridge_path(train_features, train_targets, alphas, _column_weights(block_widths, block_weights))
        val_pearson = np.stack([pearson_columns(p, val_targets) for p in path.predict(val_features)], axis=1)
        # the largest penalty among the best (reversed argmax): the simplest model the validation data support
        best = len(alphas) - 1 - np.argmax(val_pearson[:, ::-1], axis=1)
        score = float(val_pearson.max(axis=1).mean())
        if score > best_score:  # ties keep the earlier, smaller weights on the face blocks
            best_probe, best_score = path.probe(best, alphas, val_pearson, block_weights), score
    return best_probe


def refit_ridge_probe(
    probe: RidgeProbe, features: np.ndarray, targets: np.ndarray, block_widths: Sequence[int] | None = None
) -> RidgeProbe:
    """The same penalty per attribute and block weights, fitted anew on `features` (train and val faces once val
    has chosen them)."""
    alphas = np.unique(probe.alpha)
    block_widths = [features.shape[1]] if block_widths is None else list(block_widths)
    path = _ridge_path(features, targets, alphas, _column_weights(block_widths, probe.block_weights))
    return path.probe(np.searchsorted(alphas, probe.alpha), alphas, probe.val_pearson, probe.block_weights)
