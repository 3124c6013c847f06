"""`dvc repro prepare` end to end in a scratch copy of the project: runs, then is a no-op."""

import json
from pathlib import Path

import pytest

from tests.dvc_project import copy_project, dvc

pytestmark = pytest.mark.slow


def _project(tmp_path: Path, data: dict) -> Path:
    return copy_project(tmp_path / "project", {"data": data}, tmp_path, scm=True)


def _repro_twice(project: Path) -> dict:
    first = dvc(project, "repro", "prepare")
    assert first.returncode == 0, first.stderr + first.stdout
    summary = json.loads((project / "results/prepare.json").read_text())
    second = dvc(project, "repro", "prepare")
    assert second.returncode == 0, second.stderr
    assert "didn't change, skipping" in second.stdout and "Running stage" not in second.stdout
    return summary


def test_prepare_synthetic_then_noop(tmp_path: Path) -> None:
    project = _project(tmp_path, {"image_size": 32, "synthetic": {"n_faces": 30}})
    summary = _repro_twice(project)
    assert summary["n_faces"] == 30 and summary["source"] == "synthetic"
    assert (project / "data/prepared/images.npy").is_file()


def test_prepare_omi_dev_copy_then_noop(tmp_path: Path, omi_dev: Path) -> None:
    project = _project(tmp_path, {"source": "omi", "path": str(omi_dev), "image_size": 32, "attributes": ["happy"]})
    summary = _repro_twice(project)
    assert summary["n_faces"] == 804 and summary["attributes"]["happy"]["missing"] == 0
    assert summary["n_ratings"] > 804 * 30
