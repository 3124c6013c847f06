"""Using a trained model: checkpoints, batching, the model's input and its outputs, without Lightning."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from facetraits.config import TrainParams
from facetraits.errors import ConfigError
from facetraits.models.face_module import load_module
from facetraits.models.inference import (
    backbone_features,
    build_net,
    device_for,
    image_tensor,
    inference_precision,
    load_net,
    predict_from_features,
    predict_images,
    resolve_precision,
    trained_checkpoints,
)
from facetraits.models import inference
from tests.conftest import REPO

MODEL = {"backbone": "resnet18", "weights": "none", "trainable_blocks": 5, "head": "mlp", "head_hidden": 8, "dropout": 0.2}
HPARAMS = {"attributes": ["happy", "calm"], "target_mean": [4.0, 5.0], "target_std": [1.5, 0.5], "image_size": 32}
OPTIM = {"loss": "mse", "huber_delta": 1.0, "pearson_weight": 0.5, "optimizer": "adamw", "lr": 0.001,
         "backbone_lr_scale": 1.0, "weight_decay": 0.0, "momentum": 0.9, "scheduler": "none", "max_epochs": 1}  # fmt: skip


def _checkpoint(path: Path, seed: int = 0) -> Path:
    """What the train stage saves: hyperparameters and the module's state dict (the net under `net.`)."""
    torch.manual_seed(seed)
    net = build_net(**HPARAMS, model=MODEL)
    state = {f"net.{key}": value for key, value in net.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"hyper_parameters": {**HPARAMS, "model": MODEL, "optim": OPTIM}, "state_dict": state}, path)
    return path


def _faces(count: int) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (count, 32, 32, 3), dtype=np.uint8)


def test_image_tensor_is_channels_first_unit_floats() -> None:
    faces = _faces(2)
    faces[0, 1, 2] = (255, 0, 51)
    tensor = image_tensor(faces)
    assert tensor.shape == (2, 3, 32, 32) and tensor.dtype == torch.float32
    assert tensor[0, :, 1, 2].tolist() == pytest.approx([1.0, 0.0, 0.2])
    np.testing.assert_allclose(tensor.permute(0, 2, 3, 1).numpy() * 255, faces, atol=1e-4)


def test_load_net_is_the_trained_modules_net(tmp_path: Path) -> None:
    checkpoint = _checkpoint(tmp_path / "best.ckpt")
    net, module = load_net(checkpoint), load_module(checkpoint)
    assert net.attributes == ("happy", "calm") and not net.training
    for key, value in module.net.state_dict().items():
        assert torch.equal(net.state_dict()[key], value), key
    faces = _faces(5)
    np.testing.assert_array_equal(predict_images(net, faces), predict_images(module.net, faces))


def test_predictions_and_features_do_not_depend_on_the_batch_size(tmp_path: Path) -> None:
    net = load_net(_checkpoint(tmp_path / "best.ckpt"))
    faces = _faces(7)
    predicted = predict_images(net, faces, batch_size=3)
    assert predicted.shape == (7, 2) and predicted.dtype == np.float32
    np.testing.assert_allclose(predicted, predict_images(net, faces, batch_size=64), rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        direct = net(image_tensor(faces)).numpy()
    np.testing.assert_allclose(predicted, direct, rtol=1e-5, atol=1e-5)
    features = backbone_features(net, faces, batch_size=2)
    assert features.shape == (7, net.backbone.feature_dim)
    np.testing.assert_allclose(predict_from_features(net, features), predicted, rtol=1e-4, atol=1e-4)
    assert predict_images(net, faces[:0]).shape == (0, 2)


def test_a_file_that_is_no_checkpoint_is_named(tmp_path: Path) -> None:
    (tmp_path / "notes.ckpt").write_text("not a checkpoint")
    with pytest.raises(ConfigError, match=r"notes\.ckpt: not a facetraits checkpoint"):
        load_net(tmp_path / "notes.ckpt")
    with pytest.raises(ConfigError, match=r"missing\.ckpt: checkpoint not found"):
        load_net(tmp_path / "missing.ckpt")


def test_trained_checkpoints_shared_per_attribute_or_none(tmp_path: Path) -> None:
    per_attribute = [_checkpoint(tmp_path / "models" / name / "best.ckpt") for name in ("calm", "happy")]
    assert trained_checkpoints(tmp_path / "models") == per_attribute
    shared = _checkpoint(tmp_path / "models" / "best.ckpt")
    assert trained_checkpoints(tmp_path / "models") == [shared]
    with pytest.raises(ConfigError, match="no best.ckpt; run the train stage first"):
        trained_checkpoints(tmp_path / "empty")


def test_cpu_unless_a_gpu_is_asked_for_or_found() -> None:
    assert device_for("cpu") == "cpu" and device_for("gpu") == "cuda"
    assert device_for("auto") == ("cuda" if torch.cuda.is_available() else "cpu")


def test_auto_precision_is_bf16_where_the_hardware_has_it_but_never_for_a_probe(monkeypatch) -> None:
    def resolved(**train: object) -> str:
        return resolve_precision(TrainParams(**train))

    monkeypatch.setattr(inference, "native_cpu_bf16", lambda: True)
    assert resolved(accelerator="cpu") == "bf16-mixed" and resolved(accelerator="cpu", protocol="probe") == "32-true"
    monkeypatch.setattr(inference, "native_cpu_bf16", lambda: False)
    assert resolved(accelerator="cpu") == "32-true" and resolved(accelerator="gpu") == "bf16-mixed"
    assert resolved(accelerator="gpu", protocol="probe") == "32-true"
    assert resolved(precision="bf16-mixed", protocol="probe") == "bf16-mixed"
    assert resolved(precision="32-true", accelerator="gpu") == "32-true"


def test_bf16_inference_rounds_the_forward_pass_only(tmp_path: Path) -> None:
    """bf16 predictions are fp32 arrays, within bf16 rounding of the fp32 ones, and not equal to them; the
    autocast ends with the pass (an attribution's gradients after it are fp32)."""
    net = load_net(_checkpoint(tmp_path / "best.ckpt"))
    faces = _faces(6)
    exact, rounded = predict_images(net, faces), predict_images(net, faces, precision="bf16-mixed")
    assert rounded.dtype == np.float32 and not np.array_equal(exact, rounded)
    np.testing.assert_allclose(rounded, exact, rtol=0.05, atol=0.05)
    features = backbone_features(net, faces, precision="bf16-mixed")
    np.testing.assert_allclose(features, backbone_features(net, faces), rtol=0.05, atol=0.05)
    # the manifold's shortcut (heads on features computed once) predicts what the full forward pass predicts
    np.testing.assert_allclose(predict_from_features(net, features, "bf16-mixed"), rounded, rtol=1e-6, atol=1e-6)
    images = image_tensor(faces)
    with torch.no_grad():
        with inference_precision("cpu", "bf16-mixed"):
            assert net.features(images).dtype == torch.bfloat16
        assert net.features(images).dtype == torch.float32
        with inference_precision("cpu", "32-true"):
            assert net.features(images).dtype == torch.float32


def test_using_a_model_imports_no_training_code() -> None:
    """explain, manifold and predict load and run models with plain torch: no Lightning, no training module."""
    code = (
        "import sys, facetraits.explain.outputs, facetraits.explain.single, facetraits.manifold.study, "
        "facetraits.predict; print(sorted(m for m in sys.modules if m == 'lightning' or m.startswith("
        "('facetraits.models.training', 'facetraits.models.face_module'))))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert result.stdout.strip() == "[]"
