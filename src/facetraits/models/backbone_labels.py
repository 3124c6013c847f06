"""The one list of backbones, by name, with the label the report prints: torch-free, so config can validate
model.backbone and the report can name each model without loading torch (components/backbones.py builds them)."""

from __future__ import annotations

BACKBONE_LABELS: dict[str, str] = {
    "vgg16": "VGG16",
    "vgg16_bn": "VGG16-BN",
    "resnet18": "ResNet-18",
    "resnet50": "ResNet-50",
    "vit_b_16": "ViT-B/16",
    "mobilenet_v2": "MobileNetV2",
}
