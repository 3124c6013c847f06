import json

import numpy as np
import pytest
import torch
from scipy import stats

from facetraits.models.metrics import METRIC_NAMES, AttributeMetrics, split_metrics


def test_per_attribute_scores_match_scipy_and_skip_missing() -> None:
    rng = np.random.default_rng(0)
    target = rng.normal(size=(40, 2))
    preds = target + rng.normal(scale=0.5, size=(40, 2))
    target[[3, 9], 1] = np.nan
    metric = AttributeMetrics(["happy", "dominant"])
    for chunk in np.array_split(np.arange(40), 3):
        metric.update(torch.tensor(preds[chunk]), torch.tensor(target[chunk]), torch.tensor(chunk))
    result = {k: float(v) for k, v in metric.compute().items()}
    for column, name in enumerate(["happy", "dominant"]):
        keep = ~np.isnan(target[:, column])
        p, t = preds[keep, column], target[keep, column]
        assert result[f"pearson/{name}"] == pytest.approx(stats.pearsonr(p, t)[0], abs=1e-5)
        assert result[f"spearman/{name}"] == pytest.approx(stats.spearmanr(p, t)[0], abs=1e-5)
        assert result[f"mae/{name}"] == pytest.approx(np.abs(p - t).mean(), abs=1e-5)
        assert result[f"r2/{name}"] == pytest.approx(1 - ((t - p) ** 2).sum() / ((t - t.mean()) ** 2).sum(), abs=1e-5)
    assert result["pearson_mean"] == pytest.approx((result["pearson/happy"] + result["pearson/dominant"]) / 2)
    assert result["count"] == 40


def test_repeated_indices_count_once() -> None:
    """What DistributedSampler padding produces: the first samples again at the end."""
    target = torch.arange(10, dtype=torch.float32).unsqueeze(1)
    preds = target * 2 + torch.tensor([0.3, -0.2, 0.1, 0.0, 0.5, -0.4, 0.2, 0.1, -0.1, 0.3]).unsqueeze(1)
    clean, padded = AttributeMetrics(["a"]), AttributeMetrics(["a"])
    clean.update(preds, target, torch.arange(10))
    padded.update(preds, target, torch.arange(10))
    padded.update(preds[:3] + 100, target[:3], torch.arange(3))
    assert {k: float(v) for k, v in padded.compute().items()} == {k: float(v) for k, v in clean.compute().items()}


def test_constant_predictions_score_zero_not_nan() -> None:
    metric = AttributeMetrics(["a"])
    metric.update(torch.ones(6, 1), torch.arange(6, dtype=torch.float32).unsqueeze(1), torch.arange(6))
    assert float(metric.compute()["pearson/a"]) == 0.0


def test_split_metrics_equal_attribute_metrics_as_the_train_summary_rounds_them() -> None:
    rng = np.random.default_rng(1)
    human = rng.normal(50, 20, size=(30, 3))
    predicted = human + rng.normal(scale=15, size=(30, 3))
    human[[2, 5, 11], 0] = np.nan
    attributes = ["happy", "dominant", "age"]
    metric = AttributeMetrics(attributes)
    metric.update(torch.tensor(predicted), torch.tensor(human), torch.arange(30))
    reference = metric.compute()
    scores = split_metrics(predicted, human, attributes)
    assert set(scores) == {f"{n}_mean" for n in METRIC_NAMES} | set(METRIC_NAMES) | {"undefined"}
    assert scores["undefined"] == {}
    for name in METRIC_NAMES:
        assert scores[name] == {a: round(float(reference[f"{name}/{a}"]), 6) for a in attributes}
        assert scores[f"{name}_mean"] == round(float(np.mean(list(scores[name].values()))), 6)
        assert scores[f"{name}_mean"] == pytest.approx(float(reference[f"{name}_mean"]), abs=2e-6)
    rated = ~np.isnan(human[:, 0])
    assert scores["pearson"]["happy"] == pytest.approx(
        stats.pearsonr(predicted[rated, 0], human[rated, 0])[0], abs=1e-5
    )


def test_an_attribute_constant_over_the_split_is_undefined_not_zero_and_left_out_of_the_means() -> None:
    rng = np.random.default_rng(2)
    human = rng.normal(50, 20, size=(12, 2))
    human[:, 1] = 40.0  # every face rated the same: no order to correlate with, no variance to explain
    predicted = human + rng.normal(scale=5, size=(12, 2))
    scores = split_metrics(predicted, human, ["happy", "flat"])
    for name in ("pearson", "spearman", "r2"):
        assert scores[name]["flat"] is None
        assert scores[f"{name}_mean"] == scores[name]["happy"]
        assert scores["undefined"][name] == ["flat"]
    assert scores["mae"]["flat"] == pytest.approx(np.abs(predicted[:, 1] - 40.0).mean(), abs=1e-4)
    metric = AttributeMetrics(["happy", "flat"])
    metric.update(torch.tensor(predicted), torch.tensor(human), torch.arange(12))
    computed = metric.compute()
    assert torch.isnan(computed["pearson/flat"]) and torch.isnan(computed["r2/flat"])
    assert float(computed["pearson_mean"]) == pytest.approx(float(computed["pearson/happy"]))
    only_flat = split_metrics(predicted[:, 1:], human[:, 1:], ["flat"])
    assert only_flat["pearson_mean"] is None and json.loads(json.dumps(only_flat, allow_nan=False)) == only_flat
