from __future__ import annotations

from collections.abc import Sequence

import torch

from facetraits.explain.methods.base import SampledAttributionMethod


class GradientShap(SampledAttributionMethod):
    """GradientSHAP (Lundberg & Lee 2017): expected gradients on random points between a reference and the face.

    As in captum's GradientShap: per sample, the face plus Gaussian noise (`stdev`), a point at a uniform
    random position on the line from the reference to it, and gradient x (noisy face - reference). The
    reference distribution is each face's own `explain.baseline` image (its blur or its mean colour):
    every face is explained against the absence of its own detail, never against another identity,
    and the spread of the distribution comes from the input noise and the random path positions.
    """

    name = "gradient_shap"

    def attribute(self, images: torch.Tensor, target: int, keys: Sequence[int]) -> torch.Tensor:
        generators = self.generators(keys, images.device)
        noisy = self.noisy(images, generators)
        positions = torch.stack(
            [torch.rand(self.samples, generator=g, device=images.device, dtype=images.dtype) for g in generators]
        )
        references = self.references(images.detach()).unsqueeze(1)
        points = references + positions.view(*positions.shape, 1, 1, 1) * (noisy - references)
        gradients = self.gradients(points.flatten(0, 1), target).view_as(noisy)
        return (gradients * (noisy - references)).mean(dim=1)
