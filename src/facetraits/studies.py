"""Further studies beside the default one: a folder under studies/ with its own params.yaml and a dvc.yaml
derived from the project's, so each study runs, locks and compares (MLflow, `facetraits results A B`) on its own
while every stage's code stays the project's one copy.

Each study folder is its own DVC project inside the one git repository (`dvc init --subdir`): DVC skips nested
DVC projects, so the project's `dvc plots`, `dvc metrics` and `dvc exp` see only the default study, and a study
that was never run in a fresh clone cannot break them. A study runs from its folder (`cd studies/NAME && dvc repro`).
"""

from __future__ import annotations

import copy
import re
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from facetraits.config import load_params
from facetraits.errors import ConfigError
from facetraits.files import atomic_write_text

_CODE_ROOTS = ("pipelines/", "src/")
_VARIANT_FILE = re.compile(r"^results/variants/[^/]+/(?P<file>.+)$")
PLOT_TEMPLATES = Path(".dvc") / "plots"  # where DVC looks for dvc.yaml's `template:` names, in each DVC project
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


def init_study_project(project_root: Path, folder: Path) -> None:
    """Make `folder` a DVC project of its own (once, starting from the project's .dvc/config; DVC stages the new
    files in git, as `dvc init` does) with the project's .dvcignore and plot templates (every time: dvc.yaml's
    plots name the templates, and DVC looks for them in the study's own .dvc/plots)."""
    from dvc.exceptions import DvcException
    from dvc.repo import Repo

    if not (folder / ".dvc").is_dir():
        try:
            Repo.init(folder, subdir=True).close()
        except DvcException as exc:
            raise ConfigError(f"{folder}: cannot make it a DVC project (dvc init --subdir): {exc}") from None
        shutil.copyfile(Path(project_root) / ".dvc" / "config", folder / ".dvc" / "config")
    shutil.copyfile(Path(project_root) / ".dvcignore", folder / ".dvcignore")
    shutil.copytree(Path(project_root) / PLOT_TEMPLATES, folder / PLOT_TEMPLATES, dirs_exist_ok=True)


def write_study_pipeline(project_root: Path, folder: Path) -> Path:
    """folder/dvc.yaml regenerated from the project's, in a study folder set up as its own DVC project."""
    folder = Path(folder)
    relative = folder.resolve().relative_to(Path(project_root).resolve())
    project = yaml.safe_load((Path(project_root) / "dvc.yaml").read_text(encoding="utf-8"))
    variants = load_params(folder / "params.yaml").variants
    text = HEADER.format(folder=relative.as_posix()) + yaml.safe_dump(
        study_pipeline(project, len(relative.parts), variants), sort_keys=False, width=120
    )
    init_study_project(project_root, folder)
    target = folder / "dvc.yaml"
    atomic_write_text(target, text)
    return target
