"""Numbers as the study's files and MLflow take them (one rule for JSON values, one for metric keys), and the
NaN-masked Pearson r by which the probe and the ensemble choose on val."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

DIGITS = 6


def json_number(value: Any) -> int | float | None:
    """JSON has no NaN: an undefined score (None, NaN, inf) is written as null; counts stay integers, other
    values are rounded so reruns diff cleanly."""
    if value is None:
        return None
    if isinstance(value, int | np.integer) and not isinstance(value, bool):
        return int(value)
    return round(float(value), DIGITS) if math.isfinite(value) else None


def flat_metrics(tree: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """Every number of a nested metrics mapping under its path (`test/pearson/happy`), as MLflow charts it;
    nulls, text and flags are left out."""
    flat: dict[str, float] = {}
    for key, value in tree.items():
        name = f"{prefix}/{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            flat.update(flat_metrics(value, name))
        elif isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool):
            flat[name] = float(value)
    return flat


def pearson_columns(predicted: np.ndarray, observed: np.ndarray) -> np.ndarray:
    """r per column over the rows where `observed` is present (NaN-masked); 0 where either side is constant."""
    present = ~np.isnan(observed)
    count = present.sum(axis=0)
    p = np.where(present, predicted, 0.0)
    o = np.where(present, observed, 0.0)
    pc = np.where(present, p - p.sum(axis=0) / np.maximum(count, 1), 0.0)
    oc = np.where(present, o - o.sum(axis=0) / np.maximum(count, 1), 0.0)
    denominator = np.sqrt((pc**2).sum(axis=0) * (oc**2).sum(axis=0))
    return np.divide((pc * oc).sum(axis=0), denominator, out=np.zeros_like(denominator), where=denominator > 0)
