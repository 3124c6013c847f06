"""Linear probe: closed-form ridge regression per attribute on frozen, standardized backbone features.

One eigendecomposition of the train features' Gram matrix gives the ridge solution for every penalty and attribute at once; each
attribute keeps the penalty with the best validation Pearson r. The fitted map is folded into a plain
linear head, so the probe is saved and used as any other model of the project.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from facetraits.models.components.heads import LinearHeads


@dataclass(frozen=True)
class RidgeProbe:
    """z-unit predictions = features @ weight.T + bias, on raw (unstandardized) features."""

    weight: np.ndarray  # (A, D)
    bias: np.ndarray  # (A,)
    alpha: np.ndarray  # (A,) the penalty chosen per attribute
    val_pearson: np.ndarray  # (A, len(alphas)) validation r of every penalty, the evidence for the choice

    def predict(self, features: np.ndarray) -> np.ndarray:
        return features @ self.weight.T + self.bias

    def load_into(self, heads: LinearHeads) -> None:
        with torch.no_grad():
            heads.linear.weight.copy_(torch.from_numpy(self.weight))
            heads.linear.bias.copy_(torch.from_numpy(self.bias))


def _pearson_columns(predicted: np.ndarray, observed: np.ndarray) -> np.ndarray:
    """r per column over the rows where `observed` is present (NaN-masked); 0 where either side is constant."""
    present = ~np.isnan(observed)
    count = present.sum(axis=0)
    p = np.where(present, predicted, 0.0)
    o = np.where(present, observed, 0.0)
    pc = np.where(present, p - p.sum(axis=0) / np.maximum(count, 1), 0.0)
    oc = np.where(present, o - o.sum(axis=0) / np.maximum(count, 1), 0.0)
    denominator = np.sqrt((pc**2).sum(axis=0) * (oc**2).sum(axis=0))
    return np.divide((pc * oc).sum(axis=0), denominator, out=np.zeros_like(denominator), where=denominator > 0)


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

    def probe(self, chosen: np.ndarray, alphas: np.ndarray, val_pearson: np.ndarray) -> RidgeProbe:
        """The probe whose attribute a uses penalty alphas[chosen[a]], folded back onto raw features."""
        attributes = np.arange(len(chosen))
        weight = self.coefficients[chosen, :, attributes] / self.scale  # (A, D)
        return RidgeProbe(
            weight=weight.astype(np.float32),
            bias=(self.intercepts[chosen, attributes] - weight @ self.mean).astype(np.float32),
            alpha=alphas[chosen],
            val_pearson=val_pearson,
        )


def _ridge_path(features: np.ndarray, targets: np.ndarray, alphas: np.ndarray) -> _RidgePath:
    """Targets may hold NaN (an unrated face): each attribute is fitted on the faces it has."""
    x = np.asarray(features, dtype=np.float64)
    y = np.asarray(targets, dtype=np.float64)
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    scale = np.where(scale > 1e-12, scale, 1.0)
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
) -> RidgeProbe:
    """Per attribute: ridge on standardized features, the penalty chosen by validation Pearson r.

    Targets may hold NaN (an unrated face): each attribute is fitted on the train faces it has.
    """
    alphas = np.asarray(sorted(alphas), dtype=np.float64)
    path = _ridge_path(train_features, train_targets, alphas)
    val_targets = np.asarray(val_targets, dtype=np.float64)
    val_pearson = np.stack([_pearson_columns(p, val_targets) for p in path.predict(val_features)], axis=1)
    # the largest penalty among the best (reversed argmax): the simplest model the validation data support
    best = len(alphas) - 1 - np.argmax(val_pearson[:, ::-1], axis=1)
    return path.probe(best, alphas, val_pearson)


def refit_ridge_probe(probe: RidgeProbe, features: np.ndarray, targets: np.ndarray) -> RidgeProbe:
    """The same penalty per attribute, fitted anew on `features` (train and val faces once val has chosen them)."""
    alphas = np.unique(probe.alpha)
    path = _ridge_path(features, targets, alphas)
    return path.probe(np.searchsorted(alphas, probe.alpha), alphas, probe.val_pearson)
