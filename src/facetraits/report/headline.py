"""results/report.json, the study's headline: the one file DVC declares as metrics, so `dvc metrics show`,
`dvc metrics diff` and `dvc exp show` stay a few dozen columns wide and compare studies at a glance. Every other
number stays in its stage's file (`dvc metrics show results/train/metrics.json` reads one of them).

Keys are stable names (`main`, each variant's name, `ensemble`, `handcrafted`), not the report's labels, which change with
the backbone: an experiment that swaps backbones must land in the same column.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from facetraits.config import MAIN_MODEL
from facetraits.errors import DataError
from facetraits.numbers import json_number

MAIN, HANDCRAFTED_KEY, HUMAN_CEILING_KEY, ENSEMBLE_KEY = MAIN_MODEL, "handcrafted", "human_ceiling", "ensemble"
EXPLAIN_SCORES = ("deletion_auc", "insertion_auc", "randomization_p", "mass_accuracy")
MEAN_R_INTERVAL_KEYS = ("test_r_mean_ci_low", "test_r_mean_ci_high")


def read_metrics(path: Path) -> dict[str, Any]:
    """A stage's JSON metrics file; kept light (no torch, no plotting) so `facetraits results` starts fast."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{path}: metrics file not found; run the stage that writes it first (dvc repro)") from None
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not valid JSON ({exc})") from None


def _explain_headline(scores: Mapping[str, Any]) -> dict[str, dict[str, float | None]]:
    """Per method, the mean over attributes of its faithfulness, sanity and (synthetic faces) ground-truth scores."""
    return {
        method: {name: json_number(values[name]) for name in EXPLAIN_SCORES if name in values}
        for method, values in scores["mean"].items()
    }


def _manifold_headline(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """Human-model agreement of the attribute-correlation matrices and, per source, the mean kNN r over its maps."""
    knn: dict[str, float | None] = {}
    for source, methods in metrics["maps"].items():
        values = [d["knn_r_mean"] for dims in methods.values() for d in dims.values() if d["knn_r_mean"] is not None]
        knn[source] = json_number(float(np.mean(values))) if values else None
    agreement = metrics.get("agreement") or {}
    return {"agreement_r": agreement.get("pearson"), "agreement_mantel_p": agreement.get("mantel_p"), "knn_r": knn}


def headline(
    mean_r: Mapping[str, float],
    human_ceiling: float | None,
    p_values: Mapping[str, float],
    explain_scores: Mapping[str, Any],
    manifold_metrics: Mapping[str, Any],
    mean_r_intervals: Mapping[str, tuple[float, float]] | None = None,
) -> dict[str, Any]:
    """`mean_r`: mean test Pearson r by method key (main, variants, handcrafted); `p_values`: omnibus tests by name;
    `mean_r_intervals`: each mean r's bootstrap interval, as sections beside `test_r_mean` keyed alike (so
    `test_r_mean.main` keeps its column in `dvc exp show`)."""
    test_r = {key: json_number(r) for key, r in mean_r.items()}
    if human_ceiling is not None:
        test_r[HUMAN_CEILING_KEY] = json_number(human_ceiling)
    bounds = {}
    if mean_r_intervals is not None:
        for end, name in enumerate(MEAN_R_INTERVAL_KEYS):
            bounds[name] = {key: json_number(interval[end]) for key, interval in mean_r_intervals.items()}
    return {
        "test_r_mean": test_r,
        **bounds,
        "p": {name: json_number(p) for name, p in p_values.items()},
        "explain": _explain_headline(explain_scores),
        "manifold": _manifold_headline(manifold_metrics),
    }
