"""dvc.yaml's deps against the code each stage's script imports: a stale dep list means `dvc repro` skips a
stage whose code changed, a wrong result rather than a style point."""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml

from facetraits.cli import main as cli
from facetraits.stage_deps import import_closure, missing_deps, write_stage_deps
from tests.conftest import REPO


def _copy_project(root: Path) -> Path:
    shutil.copytree(REPO / "src", root / "src", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO / "pipelines", root / "pipelines")
    shutil.copy(REPO / "dvc.yaml", root / "dvc.yaml")
    return root


def test_every_stage_depends_on_every_project_file_its_script_imports() -> None:
    assert missing_deps(REPO) == {}, "run `facetraits stage-deps` from the project root"


def test_checked_in_deps_are_what_the_generator_writes(tmp_path: Path) -> None:
    project = _copy_project(tmp_path)
    write_stage_deps(project)
    assert (project / "dvc.yaml").read_text() == (REPO / "dvc.yaml").read_text()


def test_a_dep_taken_out_is_found_and_written_back(tmp_path: Path, monkeypatch) -> None:
    project = _copy_project(tmp_path)
    text = (project / "dvc.yaml").read_text()
    stripped = text.replace("      - src/facetraits/config.py\n", "", 1)  # the first stage that lists it
    assert stripped != text
    (project / "dvc.yaml").write_text(stripped)
    assert missing_deps(project) == {"prepare": ["src/facetraits/config.py"]}
    monkeypatch.chdir(project)
    assert cli(["stage-deps", "--check"]) == 1
    assert cli(["stage-deps"]) == 0
    assert missing_deps(project) == {}
    assert (project / "dvc.yaml").read_text() == text


def test_new_import_in_library_code_makes_the_stage_stale(tmp_path: Path) -> None:
    project = _copy_project(tmp_path)
    (project / "src/facetraits/extra_helper.py").write_text("VALUE = 1\n")
    files = project / "src/facetraits/files.py"
    files.write_text(files.read_text() + "\n\ndef _late():\n    from facetraits import extra_helper\n")
    missing = missing_deps(project)
    assert set(missing) == set(yaml.safe_load((project / "dvc.yaml").read_text())["stages"])  # every stage uses files.py
    assert all(found == ["src/facetraits/extra_helper.py"] for found in missing.values())


def test_closure_follows_relative_lazy_and_package_imports(tmp_path: Path) -> None:
    package = tmp_path / "src" / "facetraits"
    (package / "sub").mkdir(parents=True)
    for name, text in {
        "__init__.py": "",
        "a.py": "from .sub import b\n",
        "sub/__init__.py": "",
        "sub/b.py": "def f():\n    from ..c import g\n",
        "c.py": "import numpy\n",
        "unused.py": "",
    }.items():
        (package / name).write_text(text)
    script = tmp_path / "script.py"
    script.write_text("import facetraits.a\n")
    found = {p.relative_to(package).as_posix() for p in import_closure(script, tmp_path / "src")}
    assert found == {"__init__.py", "a.py", "sub/__init__.py", "sub/b.py", "c.py"}
