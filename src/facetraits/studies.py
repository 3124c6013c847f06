"""Further studies beside the default one: a folder under studies/ with its own params.yaml and a dvc.yaml
derived from the project's, so each study runs (`dvc repro studies/NAME/dvc.yaml`), locks and compares
(MLflow, `dvc metrics diff`) on its own while every stage's code stays the project's one copy.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from facetraits.files import atomic_write_text

_CODE_ROOTS = ("pipelines/", "src/")
HEADER = "# Generated from the project's dvc.yaml by `facetraits study-pipeline {folder}`: edit that one, then regenerate.\n"


def _relocate_code(value: str, up: str) -> str:
    return up + value if value.startswith(_CODE_ROOTS) else value


def _relocate_stage(stage: dict[str, Any], up: str) -> dict[str, Any]:
    stage = copy.deepcopy(stage)
    body = stage.get("do", stage)
    body["cmd"] = body["cmd"].replace("python pipelines/", f"python {up}pipelines/")
    body["deps"] = [_relocate_code(dep, up) if isinstance(dep, str) else dep for dep in body.get("deps", [])]
    return stage


def study_pipeline(project_pipeline: dict[str, Any], depth: int) -> dict[str, Any]:
    """The project's pipeline for a study folder `depth` levels below the root: stage scripts and library
    code are read from the project; data, models, results and params.yaml are the study's own."""
    up = "../" * depth
    derived = copy.deepcopy(project_pipeline)
    derived["stages"] = {name: _relocate_stage(stage, up) for name, stage in project_pipeline["stages"].items()}
    return derived


def write_study_pipeline(project_root: Path, folder: Path) -> Path:
    folder = Path(folder)
    relative = folder.resolve().relative_to(Path(project_root).resolve())
    project = yaml.safe_load((Path(project_root) / "dvc.yaml").read_text(encoding="utf-8"))
    text = HEADER.format(folder=relative.as_posix()) + yaml.safe_dump(
        study_pipeline(project, len(relative.parts)), sort_keys=False, width=120
    )
    target = folder / "dvc.yaml"
    atomic_write_text(target, text)
    return target
