"""`dvc repro prepare` end to end in a scratch copy of the project: runs, then is a no-op."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO

pytestmark = pytest.mark.slow


def _dvc(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run(
        [sys.executable, "-m", "dvc", *args], cwd=project, env=env, capture_output=True, text=True, timeout=300
    )


def _project(tmp_path: Path, data: dict) -> Path:
    project = tmp_path / "project"
    project.mkdir()
    for name in ("dvc.yaml", ".dvcignore"):
        shutil.copy(REPO / name, project / name)
    for folder in ("pipelines", "src", "data/raw"):
        shutil.copytree(REPO / folder, project / folder, ignore=shutil.ignore_patterns("__pycache__"))
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["data"].update(data)
    params["tracking"].update(uri=f"sqlite:///{tmp_path / 'mlflow.db'}", artifacts=str(tmp_path / "artifacts"))
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    subprocess.run(["git", "init", "-q"], cwd=project, check=True)
    assert _dvc(project, "init", "-q").returncode == 0
    return project


def _repro_twice(project: Path) -> dict:
    first = _dvc(project, "repro", "prepare")
    assert first.returncode == 0, first.stderr + first.stdout
    summary = json.loads((project / "results/prepare.json").read_text())
    second = _dvc(project, "repro", "prepare")
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
