from __future__ import annotations

from collections.abc import Sequence

import torch
from captum.attr import LayerAttribution, LayerGradCam

from facetraits.explain.methods.base import LayerAttributionMethod


class GradCam(LayerAttributionMethod):
    """Grad-CAM (Selvaraju et al. 2017) on a chosen backbone block, upsampled bilinearly to the image.

    The ReLU comes before the upsampling, and bilinear weights are convex, so the map stays >= 0.
    """

    name = "gradcam"

    def attribute(self, images: torch.Tensor, target: int, keys: Sequence[int]) -> torch.Tensor:
        return LayerGradCam(self.net, self.layer).attribute(images, target=target, relu_attributions=True)

    def to_pixel_map(self, raw: torch.Tensor, size: torch.Size) -> torch.Tensor:
        return LayerAttribution.interpolate(raw, tuple(size), interpolate_mode="bilinear")[:, 0]
