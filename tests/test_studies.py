"""Study folders: their dvc.yaml is the project's pipeline, regenerated, and their params.yaml is valid."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from facetraits.config import load_params
from facetraits.studies import HEADER, study_pipeline, variant_plots, write_study_pipeline
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
    (tmp_path / "dvc.yaml").write_text((REPO / "dvc.yaml").read_text())
    variants = {"a": {"model": {"head": "linear"}}, "b": {"train": {"lr": 0.01}}}
    (study / "params.yaml").write_text(yaml.safe_dump({"variants": variants}))
    derived = yaml.safe_load(write_study_pipeline(tmp_path, study).read_text())
    project = yaml.safe_load((REPO / "dvc.yaml").read_text())
    assert derived.keys() == project.keys() and derived["stages"].keys() == project["stages"].keys()
    train = derived["stages"]["train"]
    assert train["cmd"].startswith("python ../../pipelines/train.py --params params.yaml --prepared data/prepared")
    assert "../../src/facetraits/models" in train["deps"] and "data/prepared" in train["deps"]
    assert train["outs"] == project["stages"]["train"]["outs"] and train["params"] == project["stages"]["train"]["params"]
    variant = derived["stages"]["variant"]
    assert variant["foreach"] == "${variants}" and variant["do"]["cmd"].startswith("python ../../pipelines/train.py")
    for stage in derived["stages"].values():
        for dep in stage.get("do", stage).get("deps", []):
            if dep.startswith("../../"):
                assert (REPO / dep.removeprefix("../../")).exists(), dep
    (curve,) = [plot["val_loss"] for plot in derived["plots"] if isinstance(plot, dict) and "val_loss" in plot]
    assert curve["y"] == {f"results/{f}/history.csv": "val_loss" for f in ("train", "variants/a", "variants/b")}
