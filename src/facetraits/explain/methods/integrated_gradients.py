from __future__ import annotations

from collections.abc import Sequence

import torch
from captum.attr import IntegratedGradients as CaptumIntegratedGradients

from facetraits.explain.methods.base import AttributionMethod, Baseline
from facetraits.models.components.net import FaceTraitsNet


class IntegratedGradients(AttributionMethod):
    """Integrated Gradients (Sundararajan et al. 2017) from the stated baseline to the face.

    The faces x steps path points go through the network `batch_size` at a time, so memory does not
    grow with the number of steps.
    """

    name = "integrated_gradients"

    def __init__(self, net: FaceTraitsNet, baseline: Baseline, blur_sigma: float, steps: int, batch_size: int) -> None:
        super().__init__(net, baseline, blur_sigma)
        self.steps = steps
        self.batch_size = batch_size

    def attribute(self, images: torch.Tensor, target: int, keys: Sequence[int]) -> torch.Tensor:
        return CaptumIntegratedGradients(self.net).attribute(
            images, baselines=self.references(images.detach()), target=target, n_steps=self.steps,
            internal_batch_size=self.batch_size,
        )  # fmt: skip
