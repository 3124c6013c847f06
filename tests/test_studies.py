"""Study folders: each a DVC project of its own whose dvc.yaml is the project's pipeline, regenerated, with the
project's plot templates, and whose params.yaml is valid."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from facetraits.config import load_params
from facetraits.errors import ConfigError
from facetraits.studies import HEADER, PLOT_TEMPLATES, study_pipeline, variant_plots, write_study_pipeline
from tests.conftest import REPO

STUDIES = sorted(p.parent for p in (REPO / "studies").glob("*/params.yaml"))


@pytest.mark.parametrize("folder", STUDIES, ids=lambda p: p.name)
def test_checked_in_study_pipeline_is_the_regenerated_project_pipeline(folder: Path, tmp_path: Path) -> None:
    project = yaml.safe_load((REPO / "dvc.yaml").read_text())
    checked_in = (folder / "dvc.yaml").read_text()
    assert checked_in.startswith(HEADER.format(folder=folder.relative_to(REPO).as_posix()))
    variants = load_params(folder / "params.yaml").variants
    assert yaml.safe_load(checked_in) == study_pipeline(project, 2, variants), (
        "dvc.yaml or the study's variants changed: run `facetraits study-pipeline`"
    )


@pytest.mark.parametrize("folder", STUDIES, ids=lambda p: p.name)
def test_checked_in_study_is_a_dvc_project_with_the_project_templates(folder: Path) -> None:
    """DVC skips a nested DVC project, so the project's views never see a study that was not run; the study's
    dvc.yaml names the project's templates, which DVC looks for in the study's own .dvc/plots."""
    assert (folder / ".dvc" / "config").read_text() == (REPO / ".dvc" / "config").read_text()
    assert (folder / ".dvcignore").read_text() == (REPO / ".dvcignore").read_text()
    templates = sorted(p.name for p in (REPO / PLOT_TEMPLATES).glob("*.json"))
    assert templates and sorted(p.name for p in (folder / PLOT_TEMPLATES).glob("*.json")) == templates
    for name in templates:
        assert (folder / PLOT_TEMPLATES / name).read_text() == (REPO / PLOT_TEMPLATES / name).read_text(), (
            f"{name} changed: run `facetraits study-pipeline {folder.relative_to(REPO)}`"
        )


def _project(root: Path, git: bool = True, dvc: bool = False) -> Path:
    """The project files study-pipeline reads (dvc.yaml, .dvcignore, .dvc/config, the plot templates), in a git
    repo and, with `dvc`, a DVC project."""
    if git:
        subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    if dvc:
        from dvc.repo import Repo

        Repo.init(root).close()
    shutil.copytree(REPO / PLOT_TEMPLATES, root / PLOT_TEMPLATES)
    for name in ("dvc.yaml", ".dvcignore", ".dvc/config"):
        shutil.copy(REPO / name, root / name)
    return root


def test_project_plots_draw_every_variant_of_params_yaml() -> None:
    """DVC plots cannot loop over params.yaml's variants: dvc.yaml names each one's curve files, and a variant
    added to params.yaml without them would silently be missing from the charts."""
    plots = yaml.safe_load((REPO / "dvc.yaml").read_text())["plots"]
    assert plots == variant_plots(plots, load_params(REPO / "params.yaml").variants), (
        "dvc.yaml's curve plots must list results/variants/<name>/history.csv for every variant in params.yaml"
    )


def test_code_paths_point_at_the_project_and_outputs_stay_in_the_study(tmp_path: Path) -> None:
    study = tmp_path / "studies" / "demo"
    study.mkdir(parents=True)
    _project(tmp_path)
    variants = {"a": {"model": {"head": "linear"}}, "b": {"train": {"lr": 0.01}}}
    (study / "params.yaml").write_text(yaml.safe_dump({"variants": variants}))
    derived = yaml.safe_load(write_study_pipeline(tmp_path, study).read_text())
    project = yaml.safe_load((REPO / "dvc.yaml").read_text())
    assert derived.keys() == project.keys() and derived["stages"].keys() == project["stages"].keys()
    train = derived["stages"]["train"]
    assert train["cmd"].startswith("python ../../pipelines/train.py --params params.yaml --prepared data/prepared")
    assert "../../src/facetraits/models/training.py" in train["deps"] and "data/prepared" in train["deps"]
    assert train["outs"] == project["stages"]["train"]["outs"] and train["params"] == project["stages"]["train"]["params"]
    variant = derived["stages"]["variant"]
    assert variant["foreach"] == "${variants}" and variant["do"]["cmd"].startswith("python ../../pipelines/train.py")
    for stage in derived["stages"].values():
        for dep in stage.get("do", stage).get("deps", []):
            if dep.startswith("../../"):
                assert (REPO / dep.removeprefix("../../")).exists(), dep
    (curve,) = [plot["val_loss"] for plot in derived["plots"] if isinstance(plot, dict) and "val_loss" in plot]
    assert curve["y"] == {f"results/{f}/history.csv": "val_loss" for f in ("train", "variants/a", "variants/b")}


def test_a_new_study_folder_becomes_a_dvc_project_the_root_project_skips(tmp_path: Path) -> None:
    from dvc.repo import Repo

    _project(tmp_path, dvc=True)
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")  # the root dvc.yaml's variants
    study = tmp_path / "studies" / "demo"
    study.mkdir(parents=True)
    params = {"data": {"path": "../../data/raw"}, "variants": {"probe": {"train": {"protocol": "probe"}}}}
    (study / "params.yaml").write_text(yaml.safe_dump(params))
    write_study_pipeline(tmp_path, study)

    assert (study / ".dvc" / "config").read_text() == (REPO / ".dvc" / "config").read_text()
    assert sorted(p.name for p in (study / PLOT_TEMPLATES).iterdir()) == ["attribute_curves.json", "curves.json"]
    with Repo(tmp_path) as project, Repo(study) as own:
        assert not [s for s in project.index.stages if "studies" in s.path], "the project skips the nested study"
        assert {s.name for s in own.index.stages} >= {"prepare", "train", "report", "variant@probe"}
        assert own.plots.templates_dir == str(study / PLOT_TEMPLATES)
    config_mtime = (study / ".dvc" / "config").stat().st_mtime_ns
    write_study_pipeline(tmp_path, study)  # regenerating keeps the study's DVC project as it is
    assert (study / ".dvc" / "config").stat().st_mtime_ns == config_mtime


def test_a_study_outside_a_git_repository_is_refused_naming_the_folder(tmp_path: Path) -> None:
    study = tmp_path / "studies" / "demo"
    study.mkdir(parents=True)
    _project(tmp_path, git=False)
    (study / "params.yaml").write_text(yaml.safe_dump({"variants": {"probe": {"train": {"protocol": "probe"}}}}))
    with pytest.raises(ConfigError, match=rf"^{study}: cannot make it a DVC project \(dvc init --subdir\)"):
        write_study_pipeline(tmp_path, study)


@pytest.mark.parametrize("folder", STUDIES, ids=lambda p: p.name)
def test_a_study_logs_to_the_project_store_from_its_folder_and_from_a_queued_copy(
    folder: Path, tmp_path: Path, monkeypatch
) -> None:
    """DVC runs a study's stages from its folder with DVC_ROOT set to the study (its own DVC project), and a queued
    experiment from a copy of it: both resolve the study's relative store to the project's mlflow.db."""
    from facetraits.config import shared_tracking

    tracking = load_params(folder / "params.yaml").tracking
    monkeypatch.setenv("DVC_ROOT", str(folder))
    in_place = shared_tracking(tracking, cwd=folder)
    store = Path(in_place.uri.removeprefix("sqlite:///"))
    assert (folder / store).resolve() == REPO / "mlflow.db"
    copy = tmp_path / ".dvc" / "tmp" / "exps" / "run" / "x" / folder.relative_to(REPO)
    (copy / ".dvc").mkdir(parents=True)
    queued = shared_tracking(tracking, cwd=copy)
    assert Path(queued.uri.removeprefix("sqlite:///")) == REPO / "mlflow.db"
    assert Path(queued.artifacts) == REPO / "mlartifacts"
