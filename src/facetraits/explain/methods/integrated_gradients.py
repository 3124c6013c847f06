from __future__ import annotations

import torch
from captum.attr import IntegratedGradients as CaptumIntegratedGradients

from facetraits.explain.methods.base import AttributionMethod, Baseline
from facetraits.models.components.net import FaceTraitsNet


class IntegratedGradients(AttributionMethod):
    """Integrated Gradients (Sundararajan et al. 2017) from the stated baseline to the face."""

    name = "integrated_gradients"

    def __init__(self, net: FaceTraitsNet, baseline: Baseline, blur_sigma: float, steps: int) -> None:
        super().__init__(net, baseline, blur_sigma)
        self.steps = steps

    def attribute(self, images: torch.Tensor, target: int) -> torch.Tensor:
        return CaptumIntegratedGradients(self.net).attribute(
            images, baselines=self.references(images.detach()), target=target, n_steps=self.steps,
            internal_batch_size=len(images) * self.steps,
        )  # fmt: skip
