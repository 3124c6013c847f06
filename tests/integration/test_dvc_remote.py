"""A DVC remote in a local folder: the pipeline's outputs pushed from one clone are pulled, identical, into another."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from tests.integration.conftest import ScaleOut, dvc, run

pytestmark = [pytest.mark.servers, pytest.mark.slow]

CACHED = ("data/prepared", "models", "results/train/predictions.csv")  # the outputs of prepare and train in the cache


def _digests(project: Path) -> dict[str, str]:
    """SHA-256 of every file of the cached outputs, by path relative to the project."""
    files = [
        f for out in CACHED for f in ([project / out] if (project / out).is_file() else (project / out).rglob("*"))
    ]
    return {str(f.relative_to(project)): hashlib.sha256(f.read_bytes()).hexdigest() for f in files if f.is_file()}


def test_a_clone_pulls_the_outputs_byte_for_byte(scale_out: ScaleOut, tmp_path: Path) -> None:
    project, remote, clone = scale_out.project, tmp_path / "remote", tmp_path / "clone"
    produced = _digests(project)
    assert {"data/prepared/images.npy", "models/best.ckpt", "results/train/predictions.csv"} <= set(produced)
    dvc(project, "remote", "add", "-d", "store", str(remote))
    dvc(project, "push", "--with-deps", "train")
    assert "in sync" in dvc(project, "status", "--cloud", "--with-deps", "train")
    run(["git", "add", "-A"], project)
    run(["git", "-c", "user.name=ci", "-c", "user.email=ci@localhost", "commit", "-qm", "scale-out"], project)
    run(["git", "clone", "-q", str(project), str(clone)], tmp_path)
    assert not any((clone / out).exists() for out in CACHED), "git holds none of the cached outputs"
    dvc(clone, "pull", "--with-deps", "train")
    assert _digests(clone) == produced
    assert "Data and pipelines are up to date" in dvc(clone, "status", "--with-deps", "train")
