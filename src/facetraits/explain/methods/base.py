"""What every attribution method shares: the model's input convention and the step from raw attributions to maps.

Each method overrides `attribute` (the captum call) and, where its raw output is not pixel-shaped,
`to_pixel_map` — as in pytorch-grad-cam, one small file per method.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import ClassVar, Literal

import torch
import torchvision.transforms.functional as TF
from torch import nn

from facetraits.errors import ConfigError
from facetraits.explain.randomness import face_generator
from facetraits.models.components.backbones import Backbone
from facetraits.models.components.net import FaceTraitsNet

Baseline = Literal["blur", "mean"]


def baseline_images(images: torch.Tensor, kind: Baseline, blur_sigma: float) -> torch.Tensor:
    """The 'information removed' reference: a heavy blur of each face, or its mean colour.

    Used both as the IG / GradientSHAP reference and as what deletion / insertion fill pixels with,
    so a method is scored against the same notion of absence it was computed with.
    """
    if kind == "mean":
        return images.mean(dim=(2, 3), keepdim=True).expand_as(images).contiguous()
    sigma = max(blur_sigma * images.shape[-1], 0.5)
    kernel = 2 * int(3 * sigma) + 1
    return TF.gaussian_blur(images, [kernel, kernel], [sigma, sigma])


def gradcam_layer(backbone: Backbone, block: int) -> nn.Module:
    """The module whose activations Grad-CAM weighs: the last ReLU of a VGG block, else the block's output.

    A ResNet block reuses one ReLU module several times, so hooking it would see the wrong call.
    """
    if not 1 <= block <= len(backbone.blocks):
        raise ConfigError(f"explain.gradcam_block: must be 1..{len(backbone.blocks)}, got {block}")
    if not any(isinstance(m, nn.Conv2d) for m in backbone.blocks[block - 1].modules()):
        raise ConfigError(
            f"explain.methods: Grad-CAM weighs feature maps; block {block} of this backbone has none (ViT)"
        )
    if block == len(backbone.blocks):
        layer = backbone.attribution_layer
    else:
        module = backbone.blocks[block - 1]
        relus = [child for child in module.children() if isinstance(child, nn.ReLU)]
        layer = relus[-1] if relus else module
    return layer


class AttributionMethod(ABC):
    """Maps (B, H, W) >= 0 of one attribute's predicted rating, for [0, 1] RGB images (B, 3, H, W).

    `keys` name the faces (their rows in the prepared data; positions in the batch by default): methods
    that sample draw each face's samples from its own seeded stream, deterministic ones ignore them.
    """

    name: ClassVar[str]

    def __init__(self, net: nn.Module, baseline: Baseline, blur_sigma: float) -> None:
        self.net = net.eval()
        self.baseline = baseline
        self.blur_sigma = blur_sigma

    def maps(self, images: torch.Tensor, target: int, keys: Sequence[int] | None = None) -> torch.Tensor:
        keys = range(len(images)) if keys is None else keys
        with torch.enable_grad():
            raw = self.attribute(images.detach().clone().requires_grad_(True), target, keys)
        return self.to_pixel_map(raw.detach(), images.shape[-2:]).float()

    def references(self, images: torch.Tensor) -> torch.Tensor:
        return baseline_images(images, self.baseline, self.blur_sigma)

    @abstractmethod
    def attribute(self, images: torch.Tensor, target: int, keys: Sequence[int]) -> torch.Tensor: ...

    def to_pixel_map(self, raw: torch.Tensor, size: torch.Size) -> torch.Tensor:
        """Pixel-level methods: evidence for or against counts, so magnitudes are summed over channels."""
        return raw.abs().sum(dim=1)


class LayerAttributionMethod(AttributionMethod):
    """Methods that read one backbone layer's activations (Grad-CAM and its guided variant)."""

    def __init__(self, net: FaceTraitsNet, baseline: Baseline, blur_sigma: float, block: int) -> None:
        super().__init__(net, baseline, blur_sigma)
        self.layer = gradcam_layer(net.backbone, block)


class SampledAttributionMethod(AttributionMethod):
    """Methods that average input gradients over random samples per face (GradientSHAP, SmoothGrad).

    Done here rather than by captum, whose draws come from the global generators in batch order: each
    face draws its samples from its own stream (explain.seed and its key), so its map is the same on
    every rerun and whichever faces share its batch. The samples' passes go `batch_size` at a time.
    """

    def __init__(
        self, net: FaceTraitsNet, baseline: Baseline, blur_sigma: float, samples: int, stdev: float, seed: int,
        batch_size: int,
    ) -> None:  # fmt: skip
        super().__init__(net, baseline, blur_sigma)
        self.samples = samples
        self.stdev = stdev
        self.seed = seed
        self.batch_size = batch_size

    def generators(self, keys: Sequence[int], device: torch.device) -> list[torch.Generator]:
        return [face_generator(self.seed, int(key), device) for key in keys]

    def noisy(self, images: torch.Tensor, generators: Sequence[torch.Generator]) -> torch.Tensor:
        """(B, samples, 3, H, W): each face plus Gaussian noise of sd `stdev`, drawn from its own stream."""
        shape = (self.samples, *images.shape[1:])
        noise = [torch.randn(shape, generator=g, device=images.device, dtype=images.dtype) for g in generators]
        return images.detach().unsqueeze(1) + self.stdev * torch.stack(noise)

    def gradients(self, points: torch.Tensor, target: int) -> torch.Tensor:
        """d rating / d input at (N, 3, H, W) points, `batch_size` points per forward / backward pass."""
        grads = []
        for chunk in points.detach().split(self.batch_size):
            chunk = chunk.requires_grad_(True)
            grads.append(torch.autograd.grad(self.net(chunk)[:, target].sum(), chunk)[0])
        return torch.cat(grads)
