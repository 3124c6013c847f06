"""One rule for numbers in JSON files and one for MLflow metric keys, used by every stage."""

from __future__ import annotations

import math

import numpy as np

from facetraits.numbers import flat_metrics, json_number


def test_json_numbers_are_rounded_and_undefined_ones_null() -> None:
    assert json_number(0.12345678) == 0.123457 and json_number(np.float32(0.5)) == 0.5
    assert json_number(None) is None and json_number(math.nan) is None and json_number(np.float64(-np.inf)) is None
    assert json_number(np.int64(45)) == 45 and isinstance(json_number(np.int64(45)), int)


def test_flat_metrics_keys_are_paths_and_only_numbers_are_kept() -> None:
    tree = {"test": {"pearson": {"happy": 0.5, "calm": None}, "pearson_mean": 0.5, "undefined": {"pearson": ["calm"]}}}
    assert flat_metrics(tree) == {"test/pearson/happy": 0.5, "test/pearson_mean": 0.5}
    assert flat_metrics({"a": {"b": np.int64(2), "c": "text", "d": True}}, "manifold") == {"manifold/a/b": 2.0}
