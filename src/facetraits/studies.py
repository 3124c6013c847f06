"""Further studies beside the default one: a folder under studies/ with its own params.yaml and a dvc.yaml
derived from the project's, so each study runs (`dvc repro studies/NAME/dvc.yaml`), locks and compares
(MLflow, `dvc metrics diff`) on its own while every stage's code stays the project's one copy.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from facetraits.config import load_params
from facetraits.files import atomic_write_text

_CODE_ROOTS = ("pipelines/", "src/")
_VARIANT_FILE = re.compile(r"^results/variants/[^/]+/(?P<file>.+)$")
HEADER = "# Generated from the project's dvc.yaml by `facetraits study-pipeline {folder}`: edit that one, then regenerate.\n"


def _relocate_code(value: str, up: str) -> str:
    return up + value if value.startswith(_CODE_ROOTS) else value


def _relocate_stage(stage: dict[str, Any], up: str) -> dict[str, Any]:
    stage = copy.deepcopy(stage)
    body = stage.get("do", stage)
    body["cmd"] = body["cmd"].replace("python pipelines/", f"python {up}pipelines/")
    body["deps"] = [_relocate_code(dep, up) if isinstance(dep, str) else dep for dep in body.get("deps", [])]
    return stage


def variant_plots(plots: list[Any], variants: Iterable[str]) -> list[Any]:
    """dvc.yaml's top-level plots with each curve's variant files (results/variants/<name>/...) listed once per
    variant in `variants`: DVC plots cannot loop over params.yaml's variants, so the files are named."""
    listed = []
    for plot in plots:
        if isinstance(plot, dict) and isinstance(next(iter(plot.values())).get("y"), dict):
            ((name, spec),) = plot.items()
            y: dict[str, Any] = {}
            for path, field in spec["y"].items():
                match = _VARIANT_FILE.match(path)
                files = [path] if match is None else [f"results/variants/{v}/{match['file']}" for v in variants]
                y |= dict.fromkeys(files, field)
            plot = {name: {**spec, "y": y}}
        listed.append(plot)
    return listed


def study_pipeline(project_pipeline: dict[str, Any], depth: int, variants: Iterable[str]) -> dict[str, Any]:
    """The project's pipeline for a study folder `depth` levels below the root: stage scripts and library
    code are read from the project; data, models, results, params.yaml and the variants plotted are the study's."""
    up = "../" * depth
    derived = copy.deepcopy(project_pipeline)
    derived["stages"] = {name: _relocate_stage(stage, up) for name, stage in project_pipeline["stages"].items()}
    derived["plots"] = variant_plots(project_pipeline.get("plots", []), list(variants))
    return derived


def write_study_pipeline(project_root: Path, folder: Path) -> Path:
    folder = Path(folder)
    relative = folder.resolve().relative_to(Path(project_root).resolve())
    project = yaml.safe_load((Path(project_root) / "dvc.yaml").read_text(encoding="utf-8"))
    variants = load_params(folder / "params.yaml").variants
    text = HEADER.format(folder=relative.as_posix()) + yaml.safe_dump(
        study_pipeline(project, len(relative.parts), variants), sort_keys=False, width=120
    )
    target = folder / "dvc.yaml"
    atomic_write_text(target, text)
    return target
