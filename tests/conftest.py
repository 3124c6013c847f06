"""Shared fixtures: tiny parameter sets and a throw-away MLflow store."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from facetraits.config import StudyParams, TrackingParams, parse_params

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

REPO = Path(__file__).resolve().parents[1]
OMI_DEV = REPO.parent / "shared" / "datasets" / "omi"


def study_params(**sections: dict[str, Any]) -> StudyParams:
    """Validated parameters from partial sections, as a params.yaml with only these keys would give."""
    return parse_params(sections, source="test")


@pytest.fixture(scope="session")
def tracking_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One SQLite store for the session: creating the schema is the slow part of MLflow."""
    return tmp_path_factory.mktemp("mlflow")


@pytest.fixture
def tracking(tracking_store: Path, request: pytest.FixtureRequest) -> TrackingParams:
    """A fresh experiment per test in the shared store."""
    return TrackingParams(
        uri=f"sqlite:///{tracking_store / 'mlflow.db'}",
        experiment=f"test-{request.node.name}",
        artifacts=str(tracking_store / "artifacts"),
    )


@pytest.fixture
def omi_dev() -> Path:
    if not (OMI_DEV / "attribute_means.csv").is_file():
        pytest.skip(f"OMI development copy not found at {OMI_DEV}")
    return OMI_DEV


REQUIRE_WEIGHTS = ("FACETRAITS_REQUIRE_WEIGHTS", "FACETRAITS_REQUIRE_SERVERS")  # CI: fail instead of skip


@pytest.fixture(scope="session")
def mobilenet_imagenet() -> Path:
    """torchvision's MobileNetV2 ImageNet file, as `facetraits weights` (run by `make test`) installs it."""
    from facetraits.weights import checkpoints_dir, installed_weights

    path = installed_weights("mobilenet_v2")
    if path is None:
        reason = f"MobileNetV2 ImageNet file not installed in {checkpoints_dir()}: run `facetraits weights`"
        if any(os.environ.get(name) for name in REQUIRE_WEIGHTS):
            pytest.fail(reason + f" ({' or '.join(REQUIRE_WEIGHTS)} is set, so it must be there)")
        pytest.skip(reason)
    return path


@pytest.fixture(scope="session")
def face_models() -> None:
    """dlib and its verified model files, as `make` installs them (the `faces` extra)."""
    from facetraits.models.components.face_features import FaceFeaturesError, require_face_models

    try:
        require_face_models()
    except FaceFeaturesError as exc:
        if any(os.environ.get(name) for name in REQUIRE_WEIGHTS):
            pytest.fail(f"{exc} ({' or '.join(REQUIRE_WEIGHTS)} is set, so it must be there)")
        pytest.skip(str(exc))


@pytest.fixture(scope="session")
def real_faces(face_models):
    """Three OMI faces at 128 px, uint8 (3, 128, 128, 3)."""
    import numpy as np
    from PIL import Image

    files = sorted((OMI_DEV / "images").glob("*.jpg"))[:3]
    if len(files) < 3:
        pytest.skip(f"OMI development copy not found at {OMI_DEV}")
    return np.stack([np.asarray(Image.open(f).convert("RGB").resize((128, 128))) for f in files])
