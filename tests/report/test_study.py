import io
import json
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from facetraits.data.prepared import PreparedData, predictions_table
from facetraits.errors import DataError
from facetraits.report.intervals import BootstrapSettings
from facetraits.report.study import (
    HANDCRAFTED,
    build_report,
    collect_methods,
    interval_table,
    report_metrics,
    study_headline_metrics,
)

ATTRIBUTES = ["happy", "dominant", "attractive"]
VARIANTS = {"no_augment": "VGG16, no_augment"}


def write_results(root: Path, train: dict[str, float | None]) -> None:
    """The three kinds of metrics file the report reads, as the stages write them."""
    handcrafted, variant = dict(zip(ATTRIBUTES, (0.1, 0.2, 0.3))), dict(zip(ATTRIBUTES, (0.4, 0.5, 0.6)))
    files = {
        root / "baselines" / "metrics.json": {"handcrafted": {"test": {"pearson": handcrafted}}},
        root / "train" / "metrics.json": {"test": {"pearson": train}},
        root / "variants" / "no_augment" / "metrics.json": {"test": {"pearson": variant}},
    }
    for path, metrics in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(metrics))


def test_methods_come_with_the_file_they_were_read_from(tmp_path: Path) -> None:
    write_results(tmp_path, {"happy": 0.7, "dominant": None, "attractive": 0.9})
    methods = collect_methods(tmp_path, "VGG16", VARIANTS)
    assert methods.files == {
        HANDCRAFTED: tmp_path / "baselines" / "metrics.json",
        "VGG16": tmp_path / "train" / "metrics.json",
        "VGG16, no_augment": tmp_path / "variants" / "no_augment" / "metrics.json",
    }
    assert methods.scores["VGG16, no_augment"] == {"happy": 0.4, "dominant": 0.5, "attractive": 0.6}
    report = build_report(ATTRIBUTES, None, methods)
    assert list(report.methods) == list(methods.files)
    assert report.table.loc["happy", "VGG16"] == 0.7 and math.isnan(report.table.loc["dominant", "VGG16"])
    assert report.table.loc["mean", "VGG16"] == pytest.approx(0.8, abs=1e-15)


def test_a_stale_metrics_file_is_an_error_naming_it(tmp_path: Path) -> None:
    """A model trained on another attribute set must not have its extra scores silently dropped."""
    write_results(tmp_path, {"happy": 0.7, "dominant": 0.8, "attractive": 0.9, "smug": 0.5})
    methods = collect_methods(tmp_path, "VGG16", VARIANTS)
    named = re.escape(f"{tmp_path / 'train' / 'metrics.json'}: method 'VGG16' has scores for attributes")
    with pytest.raises(DataError, match=rf"^{named} not in the report: \['smug'\]; the file is stale"):
        build_report(ATTRIBUTES, None, methods)


def prepared(root: Path, faces: int = 60) -> PreparedData:
    """Test and train faces with ratings of ATTRIBUTES; the report reads only the faces table."""
    rng = np.random.default_rng(5)
    table = pd.DataFrame({"id": [f"f{k:03d}" for k in range(faces)], "split": ["test", "train"] * (faces // 2)})
    for attribute in ATTRIBUTES:
        table[attribute] = rng.normal(size=faces)
    table.loc[4, "dominant"] = np.nan
    images = np.zeros((faces, 2, 2, 3), np.uint8)
    return PreparedData(root=root, images=images, faces=table, meta={"attributes": ATTRIBUTES})


def write_predictions(root: Path, data: PreparedData, noise: dict[str, float]) -> None:
    """Each method's predictions table and the metrics file holding their test r, as the stages write them."""
    rng = np.random.default_rng(6)
    folders = {"handcrafted": root / "baselines", "train": root / "train", "variant": root / "variants" / "no_augment"}
    test = data.indices("test")
    baselines_metrics = {}
    for name, folder in folders.items():
        ratings = data.faces[ATTRIBUTES].to_numpy()
        predicted = np.nan_to_num(ratings) + noise[name] * rng.normal(size=ratings.shape)
        folder.mkdir(parents=True, exist_ok=True)
        file = "handcrafted_predictions.csv" if name == "handcrafted" else "predictions.csv"
        predictions_table(data, predicted).to_csv(folder / file, index=False)
        observed = ~np.isnan(ratings[test])
        r = {a: float(np.corrcoef(ratings[test][observed[:, k], k], predicted[test][observed[:, k], k])[0, 1])
             for k, a in enumerate(ATTRIBUTES)}  # fmt: skip
        if name == "handcrafted":
            baselines_metrics = {"handcrafted": {"test": {"pearson": r}}}
            (folder / "metrics.json").write_text(json.dumps(baselines_metrics))
        else:
            (folder / "metrics.json").write_text(json.dumps({"test": {"pearson": r}}))


def test_intervals_come_from_each_methods_test_predictions(tmp_path: Path) -> None:
    data = prepared(tmp_path)
    write_predictions(tmp_path, data, {"handcrafted": 3.0, "train": 0.5, "variant": 1.0})
    methods = collect_methods(tmp_path, "VGG16", VARIANTS)
    settings = BootstrapSettings(resamples=500, level=0.9, seed=1)
    report = build_report(ATTRIBUTES, None, methods, data, settings)
    intervals = report.intervals
    assert intervals is not None and intervals.faces == 30
    for method in methods.scores:
        assert (intervals.low[method] < report.table[method]).all()
        assert (report.table[method] < intervals.high[method]).all()
    metrics = report_metrics(report, {"VGG16": "main", HANDCRAFTED: "handcrafted", "VGG16, no_augment": "no_augment"},
                             {"mean": {}}, {"maps": {}})  # fmt: skip
    assert metrics["test_r_mean_ci_low"]["main"] == pytest.approx(intervals.low.loc["mean", "VGG16"], abs=1e-6)
    assert set(metrics["test_r_mean_ci_high"]) == set(metrics["test_r_mean"]) == {"main", "handcrafted", "no_augment"}
    logged = study_headline_metrics(metrics)
    assert logged["test_r_mean_ci_high/no_augment"] == metrics["test_r_mean_ci_high"]["no_augment"]
    table = pd.read_csv(io.StringIO(interval_table(report)))
    row = table[(table["attribute"] == "happy") & (table["quantity"] == "VGG16")].iloc[0]
    assert row["low"] == pytest.approx(intervals.low.loc["happy", "VGG16"], rel=1e-5)
    assert (table["quantity"] == "r difference: VGG16 - VGG16, no_augment").sum() == len(ATTRIBUTES) + 1


