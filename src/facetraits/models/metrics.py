"""Epoch-level regression metrics per attribute, exact under DDP."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torchmetrics import Metric
from torchmetrics.functional import mean_absolute_error, pearson_corrcoef, r2_score, spearman_corrcoef
from torchmetrics.utilities import dim_zero_cat

from facetraits.errors import DataError

METRIC_NAMES = ("pearson", "spearman", "mae", "r2")


class AttributeMetrics(Metric):
    """Pearson r, Spearman rho, MAE and R² for each attribute over a whole split, and their means.

    Every sample carries its data-set index: the DDP sampler pads a split by repeating samples, and
    dropping repeated indices after the gather makes the result equal the single-process one.
    Missing ratings (NaN) are left out attribute by attribute.
    """

    full_state_update = False

    def __init__(self, attributes: Sequence[str]) -> None:
        super().__init__()
        self.attributes = tuple(attributes)
        self.add_state("preds", default=[], dist_reduce_fx="cat")
        self.add_state("target", default=[], dist_reduce_fx="cat")
        self.add_state("index", default=[], dist_reduce_fx="cat")

    def update(self, preds: torch.Tensor, target: torch.Tensor, index: torch.Tensor) -> None:
        self.preds.append(preds.detach().float())
        self.target.append(target.detach().float())
        self.index.append(index.detach())

    def compute(self) -> dict[str, torch.Tensor]:
        index = dim_zero_cat(self.index)
        unique, first = _first_occurrence(index)
        preds, target = dim_zero_cat(self.preds)[first], dim_zero_cat(self.target)[first]
        result: dict[str, torch.Tensor] = {"count": torch.tensor(float(len(unique)))}
        per_metric: dict[str, list[torch.Tensor]] = {name: [] for name in METRIC_NAMES}
        for column, attribute in enumerate(self.attributes):
            observed = ~torch.isnan(target[:, column])
            values = attribute_scores(preds[observed, column], target[observed, column])
            for name, value in values.items():
                result[f"{name}/{attribute}"] = value
                per_metric[name].append(value)
        for name, values in per_metric.items():
            result[f"{name}_mean"] = torch.stack(values).nanmean()  # NaN only when no attribute has a score
        return result


def _first_occurrence(index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    unique, inverse = torch.unique(index, return_inverse=True)
    positions = torch.arange(len(index), device=index.device)
    first = torch.full((len(unique),), len(index), device=index.device, dtype=positions.dtype)
    first.scatter_reduce_(0, inverse, positions, reduce="amin")
    return unique, first


def attribute_scores(preds: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
    """Scores of one attribute.

    Undefined is not zero: with fewer than 2 rated faces, or human ratings that do not vary, r, rho and R²
    are NaN (there is nothing to correlate with or explain) and are left out of the means. Constant
    predictions of varying ratings carry no information about their order: r and rho count as 0.
    """
    nan = torch.tensor(float("nan"), device=preds.device)
    if len(target) < 2 or bool(target.std() < 1e-12):
        mae = mean_absolute_error(preds, target) if len(target) else nan
        return {"pearson": nan, "spearman": nan, "mae": mae, "r2": nan}
    constant = bool(preds.std() < 1e-12)
    zero = torch.zeros((), device=preds.device)
    return {
        "pearson": zero if constant else torch.nan_to_num(pearson_corrcoef(preds, target), nan=0.0),
        "spearman": zero if constant else torch.nan_to_num(spearman_corrcoef(preds, target), nan=0.0),
        "mae": mean_absolute_error(preds, target),
        "r2": r2_score(preds, target),
    }


def rounded_scores(per_metric: Mapping[str, Mapping[str, float]]) -> dict[str, Any]:
    """A metrics.json section: `<metric>_mean`, per-attribute values (null where undefined), `undefined`.

    Means are over the attributes with a score; `undefined` lists, per metric, the attributes left out.
    """
    section: dict[str, Any] = {}
    undefined: dict[str, list[str]] = {}
    for name, values in per_metric.items():
        defined = {a: round(float(v), 6) for a, v in values.items() if math.isfinite(float(v))}
        section[f"{name}_mean"] = round(float(np.mean(list(defined.values()))), 6) if defined else None
        section[name] = {a: defined.get(a) for a in values}
        missing = [a for a in values if a not in defined]
        if missing:
            undefined[name] = missing
    section["undefined"] = undefined
    return section


def split_metrics(predicted: np.ndarray, human: np.ndarray, attributes: Sequence[str]) -> dict[str, Any]:
    """Scores of predictions made outside Lightning, shaped like the "test" section of results/train/metrics.json.

    The same attribute_scores in float32 as AttributeMetrics, and means of the rounded values as
    summary_metrics takes them, so a baseline and the network are measured with one ruler.
    NaN human ratings are left out attribute by attribute.
    """
    if np.shape(predicted) != np.shape(human) or np.ndim(human) != 2 or np.shape(human)[1] != len(attributes):
        raise DataError(
            f"predicted {np.shape(predicted)} and human {np.shape(human)} must both be (faces, {len(attributes)}) "
            f"for attributes {list(attributes)}"
        )
    preds = torch.as_tensor(np.asarray(predicted), dtype=torch.float32)
    target = torch.as_tensor(np.asarray(human), dtype=torch.float32)
    per_metric: dict[str, dict[str, float]] = {name: {} for name in METRIC_NAMES}
    for column, attribute in enumerate(attributes):
        observed = ~torch.isnan(target[:, column])
        for name, value in attribute_scores(preds[observed, column], target[observed, column]).items():
            per_metric[name][attribute] = float(value)
    return rounded_scores(per_metric)


def shown_score(score: float | None) -> str:
    """A mean score for a one-line summary: 'undefined' where no attribute has one."""
    return "undefined" if score is None else f"{score:.3f}"
