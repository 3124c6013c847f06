"""A queued DVC experiment runs in a temporary copy of the repository; its MLflow runs belong in the project's store."""

from __future__ import annotations

from pathlib import Path

import pytest

from facetraits.config import TrackingParams, shared_tracking

RELATIVE = TrackingParams(uri="sqlite:///../../mlflow.db", artifacts="../../mlartifacts")


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A DVC repository with a study folder, and a queued experiment's copy of it under .dvc/tmp/exps/."""
    for root in (tmp_path, tmp_path / ".dvc" / "tmp" / "exps" / "tmpab12"):
        (root / ".dvc").mkdir(parents=True, exist_ok=True)
        (root / "studies" / "omi").mkdir(parents=True)
    return tmp_path


def test_a_queued_experiment_logs_to_the_repository_it_was_queued_from(project: Path, monkeypatch) -> None:
    monkeypatch.setenv("DVC_ROOT", str(project))  # what DVC sets for a queued experiment's stages
    copy = project / ".dvc" / "tmp" / "exps" / "tmpab12"
    shared = shared_tracking(RELATIVE, cwd=copy / "studies" / "omi")
    assert shared.uri == f"sqlite:///{project / 'mlflow.db'}"
    assert shared.artifacts == str(project / "mlartifacts")
    at_root = shared_tracking(TrackingParams(uri="mlruns", artifacts="mlartifacts"), cwd=copy)
    assert (at_root.uri, at_root.artifacts) == (str(project / "mlruns"), str(project / "mlartifacts"))


@pytest.mark.parametrize("where", ["workspace", "outside DVC"])
def test_the_workspace_and_runs_outside_dvc_keep_the_paths_as_written(project: Path, monkeypatch, where: str) -> None:
    if where == "workspace":
        monkeypatch.setenv("DVC_ROOT", str(project))
    else:
        monkeypatch.delenv("DVC_ROOT", raising=False)
    assert shared_tracking(RELATIVE, cwd=project / "studies" / "omi") == RELATIVE


def test_servers_and_absolute_stores_are_left_alone(project: Path, monkeypatch) -> None:
    monkeypatch.setenv("DVC_ROOT", str(project))
    copy = project / ".dvc" / "tmp" / "exps" / "tmpab12"
    for uri in ("http://127.0.0.1:5000", "postgresql://u@h/db", f"sqlite:///{project / 'store.db'}"):
        tracking = TrackingParams(uri=uri, artifacts=str(project / "a"))
        assert shared_tracking(tracking, cwd=copy) == tracking
