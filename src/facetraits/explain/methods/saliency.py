from __future__ import annotations

import torch
from captum.attr import NoiseTunnel
from captum.attr import Saliency as CaptumSaliency

from facetraits.explain.methods.base import AttributionMethod, Baseline
from facetraits.models.components.net import FaceTraitsNet


class Saliency(AttributionMethod):
    """Plain input gradients (Simonyan et al. 2014): the cheapest map, and the noisiest."""

    name = "saliency"

    def attribute(self, images: torch.Tensor, target: int) -> torch.Tensor:
        return CaptumSaliency(self.net).attribute(images, target=target, abs=True)


class SmoothGrad(AttributionMethod):
    """Saliency averaged over noisy copies of the face (SmoothGrad, via captum's NoiseTunnel)."""

    name = "smoothgrad"

    def __init__(self, net: FaceTraitsNet, baseline: Baseline, blur_sigma: float, samples: int, stdev: float) -> None:
        super().__init__(net, baseline, blur_sigma)
        self.samples = samples
        self.stdev = stdev

    def attribute(self, images: torch.Tensor, target: int) -> torch.Tensor:
        return NoiseTunnel(CaptumSaliency(self.net)).attribute(
            images, nt_type="smoothgrad", nt_samples=self.samples, stdevs=self.stdev, target=target, abs=True
        )
