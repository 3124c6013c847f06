"""Running `dvc` on a scratch copy of the project, as users run the study: shared by every test that goes
through `dvc repro`."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from tests.conftest import REPO

# What a stage needs to run; data/raw holds only a README in the repo (the tests put a data set there).
PROJECT_FILES = ("dvc.yaml", ".dvcignore", "params.yaml")
PROJECT_FOLDERS = ("pipelines", "src", "data/raw")
PLOT_TEMPLATES = ".dvc/plots"  # dvc.yaml's plots use them; copied after `dvc init`, which makes .dvc/


def dvc_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "dvc", *args]


def dvc_env() -> dict[str, str]:
    """The stages' `python` is this interpreter (its environment), as under `make study`."""
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    return {**os.environ, "PATH": path, "DVC_NO_ANALYTICS": "1"}


def dvc(project: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        dvc_command(*args), cwd=project, env=dvc_env(), check=False, capture_output=True, text=True, timeout=timeout
    )


def merge(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """`base` with `changes` applied key by key into nested mappings."""
    merged = dict(base)
    for key, value in changes.items():
        nested = isinstance(value, dict) and isinstance(merged.get(key), dict)
        merged[key] = merge(merged[key], value) if nested else value
    return merged


def update_params(project: Path, changes: dict[str, Any]) -> None:
    path = project / "params.yaml"
    path.write_text(yaml.safe_dump(merge(yaml.safe_load(path.read_text()), changes), sort_keys=False))


def copy_project(project: Path, changes: dict[str, Any], tracking_dir: Path, scm: bool = False) -> Path:
    """The project's stage files in `project`, params.yaml with `changes`, MLflow in `tracking_dir`, DVC set up."""
    project.mkdir(parents=True)
    for name in PROJECT_FILES:
        shutil.copy(REPO / name, project / name)
    for folder in PROJECT_FOLDERS:
        shutil.copytree(REPO / folder, project / folder, ignore=shutil.ignore_patterns("__pycache__"))
    tracking = {"uri": f"sqlite:///{tracking_dir / 'mlflow.db'}", "artifacts": str(tracking_dir / "artifacts")}
    update_params(project, merge(changes, {"tracking": tracking}))
    if scm:
        shutil.copy(REPO / ".gitignore", project / ".gitignore")
        subprocess.run(["git", "init", "-q"], cwd=project, check=True)
    init = dvc(project, "init", "-q", *(() if scm else ("--no-scm",)))
    assert init.returncode == 0, init.stderr
    shutil.copytree(REPO / PLOT_TEMPLATES, project / PLOT_TEMPLATES)
    return project


def snapshot(root: Path, *paths: str) -> dict[str, bytes]:
    """Every file under `paths` (files or folders, relative to `root`) with its bytes."""
    files = [p for path in map(root.joinpath, paths) for p in ([path] if path.is_file() else sorted(path.rglob("*")))]
    return {str(p.relative_to(root)): p.read_bytes() for p in files if p.is_file()}


def temporary_leftovers(*folders: Path) -> list[Path]:
    """What an interrupted atomic write leaves: hidden `.name.xxx.tmp` entries."""
    return [p for folder in folders for p in folder.rglob("*") if p.name.startswith(".") or p.name.endswith(".tmp")]
