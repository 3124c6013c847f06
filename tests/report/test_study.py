import json
import math
import re
from pathlib import Path

import pytest

from facetraits.errors import DataError
from facetraits.report.study import HANDCRAFTED, build_report, collect_methods

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
