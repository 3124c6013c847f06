"""The face_features stage's folder: dlib's blocks as FaceAnalyzer computes them, for the prepared faces whose
fingerprint it records, the policy for a face dlib's detector misses, and no dlib when no block is asked for."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from facetraits.config import FaceFeaturesParams
from facetraits.data.face_features import META_FILE, UNDETECTED_FILE, face_features_stage, load_face_features
from facetraits.data.prepare import prepare_dataset
from facetraits.data.prepared import PreparedData, load_prepared
from facetraits.errors import ConfigError, DataError
from tests.conftest import REPO, study_params
from tests.models.conftest import folder_bytes

BLOCKS = ["face_embedding", "face_landmarks"]


def _prepared(root: Path, images: np.ndarray, fingerprint: str) -> PreparedData:
    """Prepared faces as the stage reads them: images, the faces table's source files, the fingerprint."""
    rows = range(len(images))
    faces = pd.DataFrame({"id": [f"f{i}" for i in rows], "source_file": [f"images/{i}.jpg" for i in rows]})
    return PreparedData(root=root, images=images, faces=faces, meta={"fingerprint": fingerprint})


@pytest.fixture(scope="module")
def with_blank(real_faces, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Three OMI faces and a blank image (no face to detect), and the stage's output for them."""
    root = tmp_path_factory.mktemp("face_features")
    blank = np.full((1, *real_faces.shape[1:]), 128, dtype=np.uint8)
    data = _prepared(root / "prepared", np.concatenate([real_faces, blank]), "a" * 64)
    result = face_features_stage(FaceFeaturesParams(blocks=BLOCKS, workers=2), data, root / "out")
    return {"data": data, "out": root / "out", "result": result}


@pytest.mark.realdata
def test_each_block_is_what_face_analyzer_computes_and_a_blank_image_is_listed(with_blank) -> None:
    from facetraits.models.components.face_features import FaceAnalyzer

    data, cached = with_blank["data"], load_face_features(with_blank["out"], with_blank["data"])
    assert {block: values.shape for block, values in cached.blocks.items()} == {
        "face_embedding": (4, 128), "face_landmarks": (4, 2414)
    }  # fmt: skip
    analyzer = FaceAnalyzer()
    for row, face in enumerate(data.images):
        expected, detected = analyzer.features(face, BLOCKS)
        np.testing.assert_allclose(cached.columns(BLOCKS)[row], expected, rtol=1e-6)
        assert detected == (row != 3)
    np.testing.assert_array_equal(cached.columns(["face_landmarks"]), cached.blocks["face_landmarks"])
    assert cached.undetected.to_dict("records") == [{"row": 3, "id": "f3", "source_file": "images/3.jpg"}]
    result = with_blank["result"]
    assert "missed 1, measured in the whole image: images/3.jpg" in result.summary
    assert result.metrics["face_features/n_undetected"] == 1 and result.metrics["face_features/n_faces"] == 4
    assert json.loads((with_blank["out"] / META_FILE).read_text()) == {
        "prepared_fingerprint": "a" * 64, "blocks": {"face_embedding": 128, "face_landmarks": 2414}, "faces": 4
    }  # fmt: skip


@pytest.mark.realdata
def test_undetected_error_names_the_file_and_keeps_the_previous_output(with_blank) -> None:
    before = folder_bytes(with_blank["out"])
    params = FaceFeaturesParams(blocks=["face_landmarks"], undetected="error", workers=1)
    with pytest.raises(DataError, match=r"found no face in 1 prepared image\(s\) of .*: images/3\.jpg"):
        face_features_stage(params, with_blank["data"], with_blank["out"])
    assert folder_bytes(with_blank["out"]) == before


def test_face_features_of_other_prepared_faces_are_refused(tmp_path: Path) -> None:
    images = np.zeros((2, 8, 8, 3), dtype=np.uint8)
    with pytest.raises(DataError, match=r"meta\.json: missing; run the face_features stage first"):
        load_face_features(tmp_path / "out", _prepared(tmp_path, images, "a" * 64))
    face_features_stage(FaceFeaturesParams(), _prepared(tmp_path, images, "a" * 64), tmp_path / "out")
    with pytest.raises(DataError, match=r"other prepared faces \(fingerprint aaaaaaaaaaaa, 2 faces\) .* \(fingerprint "
                       r"bbbbbbbbbbbb, 2 faces\): rerun the face_features stage \(dvc repro face_features\)"):  # fmt: skip
        load_face_features(tmp_path / "out", _prepared(tmp_path, images, "b" * 64))
    with pytest.raises(DataError, match=r"\(fingerprint aaaaaaaaaaaa, 2 faces\) .* 3 faces\)"):
        load_face_features(tmp_path / "out", _prepared(tmp_path, np.zeros((3, 8, 8, 3), np.uint8), "a" * 64))
    cached = load_face_features(tmp_path / "out", _prepared(tmp_path, images, "a" * 64))
    with pytest.raises(ConfigError, match=r"holds no \['face_embedding'\] features .* add them to face_features\.blocks"):
        cached.columns(["face_embedding"])


def test_the_default_stage_writes_its_manifest_alone_and_never_loads_dlib(tmp_path: Path) -> None:
    params = study_params(data={"image_size": 16, "synthetic": {"n_faces": 12}})
    prepare_dataset(params.data, tmp_path / "prepared", progress=False)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"data": {"image_size": 16, "synthetic": {"n_faces": 12}}}))
    script = (
        "import runpy, sys; main = runpy.run_path(sys.argv[1])['main']; code = main(sys.argv[2:]); "
        "print(code, 'dlib' in sys.modules, 'facetraits.models.components.face_features' in sys.modules)"
    )
    args = ["--params", "params.yaml", "--prepared", "prepared", "--out", "face_features"]
    done = subprocess.run(
        [sys.executable, "-c", script, str(REPO / "pipelines" / "face_features.py"), *args],
        cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.stdout.splitlines()[-1] == "0 False False", done.stderr
    assert "face_features.blocks is empty: no face features computed" in done.stdout
    assert sorted(path.name for path in (tmp_path / "face_features").iterdir()) == [META_FILE, UNDETECTED_FILE]
    data = load_prepared(tmp_path / "prepared")
    cached = load_face_features(tmp_path / "face_features", data)
    assert cached.blocks == {} and cached.undetected.empty
    assert json.loads((tmp_path / "face_features" / META_FILE).read_text())["prepared_fingerprint"] == data.meta["fingerprint"]
