from __future__ import annotations

import torch
from captum.attr import GradientShap as CaptumGradientShap

from facetraits.explain.methods.base import AttributionMethod, Baseline
from facetraits.models.components.net import FaceTraitsNet


class GradientShap(AttributionMethod):
    """GradientSHAP (Lundberg & Lee 2017): expected gradients over noisy points between references and the face.

    The reference distribution is the batch's baseline images (blurred or mean-colour faces), so
    every face is explained against references like itself rather than against other identities.
    """

    name = "gradient_shap"

    def __init__(self, net: FaceTraitsNet, baseline: Baseline, blur_sigma: float, samples: int, stdev: float) -> None:
        super().__init__(net, baseline, blur_sigma)
        self.samples = samples
        self.stdev = stdev

    def attribute(self, images: torch.Tensor, target: int) -> torch.Tensor:
        return CaptumGradientShap(self.net).attribute(
            images, baselines=self.references(images.detach()), n_samples=self.samples, stdevs=self.stdev, target=target
        )
