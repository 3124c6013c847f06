"""A variant name from params.yaml never reaches a shell: dvc.yaml's command for `variant@<name>` holds no
params-derived text, and the stage refuses the name it reads from DVC before deriving any path from it."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.dvc_project import copy_project, dvc

pytestmark = pytest.mark.slow


def test_dvc_repro_of_a_hostile_variant_runs_no_command(tmp_path: Path) -> None:
    injected = tmp_path / "INJECTED"
    name = f"x;touch {injected};#"
    project = copy_project(tmp_path / "project", {"variants": {name: {"train": {"lr": 0.01}}}}, tmp_path)
    for dep in ("prepared", "face_features"):  # the stage's deps: it is refused before reading them
        (project / "data" / dep).mkdir(parents=True)
    (project / "results" / "sweep").mkdir(parents=True)
    (project / "results" / "sweep" / "best_params.yaml").write_text(yaml.safe_dump({"overrides": {}}))

    command = yaml.safe_load((project / "dvc.yaml").read_text())["stages"]["variant"]["do"]["cmd"]
    assert "${" not in command, "dvc.yaml interpolates params into the variant's shell command"
    ran = dvc(project, "repro", "--single-item", f"variant@{name}")
    assert not injected.exists(), "the variant name ran as a shell command"
    assert ran.returncode != 0
    output = ran.stdout + ran.stderr
    assert f"error: variants: DVC stage 'variant@{name}' is not variant@<name>" in output, output
    assert "Traceback" not in output
    assert not (project / "variants").exists() and not (project / "results" / "variants").exists()
