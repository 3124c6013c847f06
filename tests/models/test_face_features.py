"""dlib's face features: verified model files, aligned landmark geometry, the parallel computation, and the fused
probe as a model (checkpoint, predict from files, refused gradients)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from facetraits.data.face_features import face_features_stage, load_face_features
from facetraits.errors import ConfigError
from facetraits.models.components import face_features as ff
from facetraits.models.components.face_features import (
    BLOCK_DIMS,
    FaceAnalyzer,
    FaceBlocks,
    FaceFeaturesError,
    aligned_landmarks,
    face_features,
)
from facetraits.models.inference import backbone_features, load_net, predict_images
from facetraits.models.probe import fit_ridge_probe
from facetraits.models.training import train_study
from facetraits.predict import load_predictor, predict_files
from tests.models.conftest import tiny_params

BLOCKS = ("face_embedding", "face_landmarks")


def test_landmark_geometry_ignores_position_size_and_rotation() -> None:
    rng = np.random.default_rng(0)
    points = rng.uniform(20, 100, size=(68, 2))
    angle = 0.4
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    moved = 2.5 * points @ rotation.T + np.array([30.0, -7.0])
    features = aligned_landmarks(points)
    assert features.shape == (BLOCK_DIMS["face_landmarks"],) == (136 + 68 * 67 // 2,)
    np.testing.assert_allclose(aligned_landmarks(moved), features, atol=1e-9)
    aligned = features[:136].reshape(68, 2)
    eye_line = aligned[42:48].mean(axis=0) - aligned[36:42].mean(axis=0)
    assert abs(eye_line[1]) < 1e-9 and eye_line[0] > 0  # the eyes lie on a horizontal line
    assert np.sqrt((aligned**2).sum(axis=1).mean()) == pytest.approx(1.0)
    assert features[136] == pytest.approx(np.linalg.norm(aligned[0] - aligned[1]))


def test_a_missing_package_or_a_replaced_model_file_is_named(monkeypatch, tmp_path) -> None:
    monkeypatch.setattr(ff.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FaceFeaturesError, match=r"face_recognition_models.*\.\[faces\]"):
        ff.model_file("shape_predictor_5_face_landmarks.dat")
    monkeypatch.undo()
    fake = tmp_path / "face_recognition_models"
    (fake / "models").mkdir(parents=True)
    (fake / "models" / "shape_predictor_5_face_landmarks.dat").write_bytes(b"not dlib's file")
    spec = type("Spec", (), {"submodule_search_locations": [str(fake)]})()
    monkeypatch.setattr(ff.importlib.util, "find_spec", lambda name: spec)
    with pytest.raises(FaceFeaturesError, match=r"shape_predictor_5_face_landmarks\.dat: sha256 [0-9a-f]{64} is not the pinned"):
        ff.model_file("shape_predictor_5_face_landmarks.dat")


@pytest.mark.realdata
def test_parallel_features_equal_one_face_at_a_time_and_a_blank_image_is_listed_as_undetected(real_faces) -> None:
    blank = np.full((1, 128, 128, 3), 128, dtype=np.uint8)
    images = np.concatenate([real_faces, blank])
    computed = face_features(images, BLOCKS, workers=2, progress=False)
    assert computed.values.shape == (4, 128 + BLOCK_DIMS["face_landmarks"]) and np.isfinite(computed.values).all()
    assert computed.undetected == (3,)  # every real face found; the blank image analysed in its whole box
    analyzer = FaceAnalyzer()
    for index, face in enumerate(images):
        expected, detected = analyzer.features(face, BLOCKS)
        np.testing.assert_allclose(computed.values[index], expected, rtol=1e-6)
        assert detected == (index != 3)
    embeddings = computed.block("face_embedding")[:3]
    mirrored = face_features(real_faces[:, :, ::-1], ("face_embedding",), workers=1, progress=False).values
    assert np.linalg.norm(mirrored - embeddings, axis=1).max() < 0.1  # flip-averaged: near-identical for the mirror
    distinct = np.linalg.norm(embeddings[0] - embeddings[1])
    assert distinct > 0.3  # two people are far apart (dlib's same-person threshold is 0.6)


@pytest.mark.slow
def test_fused_probe_is_a_model_that_rates_image_files_by_itself(face_models, mobilenet_imagenet, tiny_data, tmp_path) -> None:
    blocks = ["backbone", "face_embedding", "face_landmarks"]
    params = tiny_params(
        model={"backbone": "mobilenet_v2", "weights": "imagenet"},
        train={"protocol": "probe", "ridge_alphas": [1.0, 100.0], "probe_blocks": blocks, "probe_block_weights": [0.5, 2.0]},
        face_features={"blocks": list(BLOCKS), "workers": 2},
    )
    with pytest.raises(ConfigError, match="reads them from the face_features stage's output"):
        train_study(tiny_data, params.model, params.train, tmp_path / "models")
    face_features_stage(params.face_features, tiny_data, tmp_path / "face_features")
    cached = load_face_features(tmp_path / "face_features", tiny_data)
    (fit,) = train_study(tiny_data, params.model, params.train, tmp_path / "models", face_features=cached)
    details = json.loads((tmp_path / "models" / "probe.json").read_text())
    assert details["blocks"] == {"backbone": 1280, "face_embedding": 128, "face_landmarks": 2414}
    assert details["block_weights"]["backbone"] == 1.0 and set(details["block_weights"].values()) <= {0.5, 1.0, 2.0}
    assert details["undetected_faces"] == tiny_data.faces["source_file"].iloc[cached.undetected["row"]].tolist()
    net = load_net(fit.best_checkpoint)
    assert net.face_blocks.blocks == tuple(blocks[1:]) and net.heads.linear.weight.shape[1] == 1280 + 128 + 2414
    # the cached blocks are those the model computes from pixels, so the probe fitted on them is the one a fit on
    # features computed from pixels gives (as it was fitted before the cache), and predicts alike from either
    features = backbone_features(net, tiny_data.images)
    from_cache = backbone_features(net, tiny_data.images, face_features=cached.columns(BLOCKS))
    np.testing.assert_allclose(from_cache, features, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(
        predict_images(net, tiny_data.images, face_features=cached.columns(BLOCKS)), predict_images(net, tiny_data.images),
        rtol=1e-5, atol=1e-5,
    )
    train_rows, val_rows = tiny_data.indices("train"), tiny_data.indices("val")
    targets = tiny_data.faces[list(tiny_data.attributes)].to_numpy(np.float64)
    z = (targets - net.target_mean.numpy()) / net.target_std.numpy()
    probe = fit_ridge_probe(
        features[train_rows], z[train_rows], features[val_rows], z[val_rows], [1.0, 100.0], [1280, 128, 2414], [0.5, 2.0]
    )
    assert probe.block_weights == tuple(details["block_weights"].values())
    np.testing.assert_allclose(net.heads.linear.weight.detach().numpy(), probe.weight, rtol=1e-4, atol=1e-5)
    # predict from image files: detection and landmarks run inside the model
    files = []
    for index in range(3):
        files.append(tmp_path / f"face{index}.png")
        Image.fromarray(np.asarray(tiny_data.images[index])).save(files[-1])
    table = predict_files(load_predictor(str(fit.best_checkpoint)), files)
    images = torch.from_numpy(np.array(tiny_data.images[:3])).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():
        np.testing.assert_allclose(table[list(tiny_data.attributes)].to_numpy(), net(images).numpy(), rtol=1e-4, atol=1e-4)
    with pytest.raises(FaceFeaturesError, match="no gradient: gradient explanations"):
        net(images.requires_grad_())


def test_face_blocks_refuse_an_unknown_block() -> None:
    with pytest.raises(FaceFeaturesError, match=r"unknown face feature block\(s\) \['face_mesh'\]"):
        FaceBlocks(["face_mesh"])
