from __future__ import annotations

from collections.abc import Sequence

import torch
from captum.attr import Saliency as CaptumSaliency

from facetraits.explain.methods.base import AttributionMethod, SampledAttributionMethod


class Saliency(AttributionMethod):
    """Plain input gradients (Simonyan et al. 2014): the cheapest map, and the noisiest."""

    name = "saliency"

    def attribute(self, images: torch.Tensor, target: int, keys: Sequence[int]) -> torch.Tensor:
        return CaptumSaliency(self.net).attribute(images, target=target, abs=True)


class SmoothGrad(SampledAttributionMethod):
    """Absolute input gradients averaged over noisy copies of the face (Smilkov et al. 2017; captum's
    NoiseTunnel smoothgrad over Saliency, with each face's noise from its own stream)."""

    name = "smoothgrad"

    def attribute(self, images: torch.Tensor, target: int, keys: Sequence[int]) -> torch.Tensor:
        noisy = self.noisy(images, self.generators(keys, images.device))
        return self.gradients(noisy.flatten(0, 1), target).view_as(noisy).abs().mean(dim=1)
