"""Using a trained model: load it from a checkpoint, pick the device, turn uint8 faces into its input and run it
batch by batch. Plain torch: explain, manifold and predict need no Lightning training code."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from facetraits.batching import batches
from facetraits.config import TrainParams
from facetraits.errors import ConfigError
from facetraits.models.components.backbones import build_backbone
from facetraits.models.components.heads import build_heads
from facetraits.models.components.net import FaceTraitsNet

CHECKPOINT_HPARAMS = frozenset({"attributes", "target_mean", "target_std", "image_size", "model", "optim"})
BATCH_SIZE = 64


def uses_gpu(accelerator: str) -> bool:
    """train.accelerator resolved for this machine: gpu, or auto where CUDA is there."""
    return accelerator == "gpu" or (accelerator == "auto" and torch.cuda.is_available())


def device_for(accelerator: str) -> str:
    return "cuda" if uses_gpu(accelerator) else "cpu"


def native_cpu_bf16() -> bool:
    """A CPU with AVX-512 BF16 or AMX trains VGG16-BN ~1.5x faster in bf16-mixed than in fp32 (measured on a
    2-core EPYC at 64 px); without them bf16 is emulated and slower than fp32."""
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")  # private torch API: absent means no
    return any(getattr(torch.cpu, name, lambda: False)() for name in probes)


def resolve_precision(train: TrainParams) -> str:
    """train.precision 'auto': bf16-mixed on a GPU or a CPU with native bf16, else 32-true. A probe stays fp32: its
    ridge weights amplify bf16's rounding of the features (default study, bf16 test: mean r 0.515 -> 0.372)."""
    if train.precision != "auto":
        return train.precision
    if train.protocol == "probe":
        return "32-true"
    return "bf16-mixed" if uses_gpu(train.accelerator) or native_cpu_bf16() else "32-true"


def inference_precision(device: torch.device | str, precision: str) -> contextlib.AbstractContextManager:
    """Forward passes without gradients (predictions, features, deletion curves) run in the precision the study
    trains and tests in, so written predictions score as the test loop scored them. Gradients for attribution
    maps stay fp32."""
    device_type = torch.device(device).type
    if precision == "bf16-mixed":
        return torch.autocast(device_type, dtype=torch.bfloat16)
    if precision == "16-mixed" and device_type == "cuda":
        return torch.autocast(device_type, dtype=torch.float16)
    return contextlib.nullcontext()


def image_tensor(faces: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    """uint8 (B, H, W, 3) faces -> float [0, 1] (B, 3, H, W) on the device: the model's input."""
    return torch.from_numpy(np.array(faces)).to(device).permute(0, 3, 1, 2).float().div(255)


def build_net(
    attributes: Sequence[str],
    target_mean: Sequence[float],
    target_std: Sequence[float],
    image_size: int,
    model: dict[str, Any],
) -> FaceTraitsNet:
    """The network a checkpoint's hyperparameters describe (pool and hflip_average absent from older ones;
    face_blocks only in a fused probe's)."""
    backbone = build_backbone(
        model["backbone"], model["weights"], model["trainable_blocks"], image_size, model.get("pool", "avg")
    )
    face_blocks = None
    if model.get("face_blocks"):
        from facetraits.models.components.face_features import FaceBlocks  # dlib: only for a model that uses it

        face_blocks = FaceBlocks(model["face_blocks"])
    width = backbone.feature_dim + (0 if face_blocks is None else face_blocks.feature_dim)
    heads = build_heads(model["head"], width, len(attributes), model["head_hidden"], model["dropout"])
    return FaceTraitsNet(
        backbone, heads, torch.tensor(target_mean), torch.tensor(target_std), attributes, image_size,
        model.get("hflip_average", False), face_blocks,
    )  # fmt: skip


def read_checkpoint(checkpoint: Path, map_location: str | torch.device = "cpu") -> tuple[dict[str, Any], dict[str, Any]]:
    """(hyperparameters, state dict) of a facetraits checkpoint, without unpickling code (weights_only); a file
    that is not one is named, not a traceback."""
    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise ConfigError(f"{checkpoint}: checkpoint not found")
    with checkpoint.open("rb") as file:
        if file.read(4) != b"PK\x03\x04":
            raise ConfigError(f"{checkpoint}: not a facetraits checkpoint (a checkpoint is a torch.save zip archive)")
    try:
        content = torch.load(checkpoint, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means the file is not ours
        raise ConfigError(f"{checkpoint}: not a loadable facetraits checkpoint: {exc}") from None
    hparams = content.get("hyper_parameters") if isinstance(content, dict) else None
    if not isinstance(hparams, dict) or not CHECKPOINT_HPARAMS <= set(hparams):
        raise ConfigError(f"{checkpoint}: not a facetraits checkpoint (hyper_parameters lack {sorted(CHECKPOINT_HPARAMS)})")
    hparams = {key: hparams[key] for key in CHECKPOINT_HPARAMS}
    return {**hparams, "model": {**hparams["model"], "weights": "none"}}, content["state_dict"]


def load_net(checkpoint: Path, device: str | torch.device = "cpu") -> FaceTraitsNet:
    """The trained network of a checkpoint, in eval mode on `device`."""
    hparams, state = read_checkpoint(checkpoint)
    net = build_net(**{key: hparams[key] for key in ("attributes", "target_mean", "target_std", "image_size", "model")})
    try:
        net.load_state_dict({key.removeprefix("net."): value for key, value in state.items() if key.startswith("net.")})
    except RuntimeError as exc:
        raise ConfigError(f"{checkpoint}: weights do not fit the model it describes: {exc}") from None
    return net.to(device).eval()


def trained_checkpoints(models_dir: Path) -> list[Path]:
    """The shared model's best.ckpt, or one per attribute under models/<attribute>/ (per_attribute protocol)."""
    models_dir = Path(models_dir)
    shared = models_dir / "best.ckpt"
    found = [shared] if shared.is_file() else sorted(models_dir.glob("*/best.ckpt"))
    if not found:
        raise ConfigError(f"{models_dir}: no best.ckpt; run the train stage first (dvc repro train)")
    return found


@torch.no_grad()
def _outputs(
    net: FaceTraitsNet, images: np.ndarray, width: int, batch_size: int,
    forward: Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor], precision: str,
    face_features: np.ndarray | None,
) -> np.ndarray:  # fmt: skip
    device = next(net.parameters()).device
    net.eval()
    out = [np.zeros((0, width), dtype=np.float32)]
    for rows in batches(len(images), batch_size):
        face = None if face_features is None else torch.from_numpy(np.array(face_features[rows])).to(device)
        with inference_precision(device, precision):
            outputs = forward(image_tensor(images[rows], device), face)
        out.append(outputs.float().cpu().numpy())
    return np.concatenate(out)


def predict_images(
    net: FaceTraitsNet, images: np.ndarray, batch_size: int = BATCH_SIZE, precision: str = "32-true",
    face_features: np.ndarray | None = None,
) -> np.ndarray:  # fmt: skip
    """(N, A) ratings for uint8 (N, S, S, 3) faces, streamed batch by batch (a memory map stays on disk); a fused
    probe's face blocks from `face_features` row for row (the face_features stage's), else from the pixels."""
    return _outputs(net, images, len(net.attributes), batch_size, net, precision, face_features)


def backbone_features(
    net: FaceTraitsNet, images: np.ndarray, batch_size: int = BATCH_SIZE, precision: str = "32-true",
    face_features: np.ndarray | None = None,
) -> np.ndarray:  # fmt: skip
    """(N, D) pooled backbone features of uint8 faces (and a fused probe's face blocks, as predict_images takes
    them): what the probe, the sweep's frozen-backbone trials and the manifold maps use."""
    return _outputs(net, images, net.feature_dim, batch_size, net.features, precision, face_features)


@torch.no_grad()
def predict_from_features(net: FaceTraitsNet, features: np.ndarray, precision: str = "32-true") -> np.ndarray:
    """FaceTraitsNet.forward from features already computed (in `precision`): skips a second backbone pass."""
    device = net.target_mean.device
    with inference_precision(device, precision):
        standardized = net.heads(torch.from_numpy(features).to(device))
    return (standardized.float() * net.target_std + net.target_mean).cpu().numpy()
