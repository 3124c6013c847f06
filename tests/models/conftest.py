"""A tiny prepared synthetic data set shared by the model tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from facetraits.config import StudyParams
from facetraits.data.prepare import prepare_dataset
from facetraits.data.prepared import PreparedData, load_prepared
from tests.conftest import study_params

TINY_TRAIN = {"max_epochs": 1, "batch_size": 16, "progress_bar": False, "augment": {"strength": 1.0}}
TINY_MODEL = {"head_hidden": 16, "trainable_blocks": 1}


def tiny_params(model: dict | None = None, train: dict | None = None, **sections: dict) -> StudyParams:
    return study_params(
        data={"image_size": 32, "synthetic": {"n_faces": 56}},
        model={**TINY_MODEL, **(model or {})},
        train={**TINY_TRAIN, **(train or {})},
        **sections,
    )


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> PreparedData:
    out = tmp_path_factory.mktemp("tiny") / "prepared"
    prepare_dataset(tiny_params().data, out, progress=False)
    return load_prepared(out)


def folder_bytes(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` by its relative path: what dvc.lock hashes."""
    return {str(path.relative_to(folder)): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}
