from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch
from captum.attr import GuidedGradCam as CaptumGuidedGradCam

from facetraits.explain.methods.base import LayerAttributionMethod


class GuidedGradCam(LayerAttributionMethod):
    """Grad-CAM times guided backprop: attribute-specific and pixel-sharp (needs out-of-place ReLU modules)."""

    name = "guided_gradcam"

    def attribute(self, images: torch.Tensor, target: int, keys: Sequence[int]) -> torch.Tensor:
        with warnings.catch_warnings():  # the hooks are guided backprop itself, removed when it returns: not news
            warnings.filterwarnings("ignore", message="Setting backward hooks on ReLU activations", category=UserWarning)
            return CaptumGuidedGradCam(self.net, self.layer).attribute(images, target=target, interpolate_mode="bilinear")
