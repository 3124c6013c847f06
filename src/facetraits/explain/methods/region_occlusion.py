from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from facetraits.explain.methods.base import AttributionMethod, Baseline
from facetraits.explain.regions import REGIONS
from facetraits.models.components.net import FaceTraitsNet
from facetraits.models.inference import inference_precision

RegionReader = Callable[[Sequence[int]], np.ndarray]  # face keys (rows) -> uint8 (B, H, W) labels into REGIONS


class RegionOcclusion(AttributionMethod):
    """Feature ablation over face regions (captum's FeatureAblation with the regions as its feature mask, computed
    here for every output at once: captum scores one output per call and spent more time building its ablated
    inputs than the model did): each region in turn is replaced by the `explain.baseline` image, and its pixels get
    the drop of the standardized prediction.

    No gradient is taken, so it explains any model, dlib's face features and combinations included, and its
    forward passes run in `precision` (the study's, as its predictions). Drops are in the attribute's train-split
    standard deviations, so attributes compare; the map is their magnitude.
    """

    name = "region_occlusion"

    def __init__(
        self, net: FaceTraitsNet, baseline: Baseline, blur_sigma: float, regions: RegionReader, batch_size: int,
        precision: str = "32-true",
    ) -> None:  # fmt: skip
        super().__init__(net, baseline, blur_sigma)
        self.regions = regions
        self.batch_size = batch_size
        self.precision = precision

    def maps(self, images: torch.Tensor, target: int, keys: Sequence[int] | None = None) -> torch.Tensor:
        keys = range(len(images)) if keys is None else keys
        return self.attribute(images.detach(), target, keys).float()

    def attribute(self, images: torch.Tensor, target: int, keys: Sequence[int]) -> torch.Tensor:
        """(B, H, W): each pixel's region's |drop|."""
        labels = self.labels(keys, images.device)
        drops = self.drops(images, labels)[..., target].nan_to_num(0.0).abs()
        return drops.gather(1, labels.flatten(1)).view_as(labels)

    def labels(self, keys: Sequence[int], device: torch.device) -> torch.Tensor:
        return torch.from_numpy(self.regions(keys)).to(device, torch.long)

    @torch.no_grad()
    def drops(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """(B, len(REGIONS), outputs) prediction of each face minus that with one region replaced by its reference,
        NaN where a face lacks the region: the faces and one copy per region present, `batch_size` images a pass."""
        references = self.references(images)
        present = [index for index in range(len(REGIONS)) if (labels == index).any()]
        occluded = [torch.where((labels == index).unsqueeze(1), references, images) for index in present]
        outputs = []
        for chunk in torch.cat([images, *occluded]).split(self.batch_size):
            with inference_precision(images.device, self.precision):
                outputs.append(self.net.standardized(chunk).float())
        predicted = torch.cat(outputs).view(1 + len(present), len(images), -1)
        drops = torch.full((len(images), len(REGIONS), predicted.shape[-1]), float("nan"), device=images.device)
        for position, index in enumerate(present, start=1):
            has = (labels == index).flatten(1).any(dim=1)
            drops[has, index] = (predicted[0] - predicted[position])[has]
        return drops

    def region_drops(self, images: torch.Tensor, targets: Sequence[int], keys: Sequence[int]) -> np.ndarray:
        """(len(targets), B, len(REGIONS)) signed drops (positive: the region raised the prediction); NaN where a
        face lacks the region. One set of forward passes serves every target."""
        drops = self.drops(images.detach(), self.labels(keys, images.device))[..., list(targets)]
        return drops.permute(2, 0, 1).double().cpu().numpy()
