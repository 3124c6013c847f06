from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

import numpy as np
import torch
from captum.attr import FeatureAblation

from facetraits.explain.methods.base import AttributionMethod, Baseline
from facetraits.explain.regions import REGIONS
from facetraits.models.components.net import FaceTraitsNet
from facetraits.models.inference import inference_precision
from facetraits.models.inference import inference_precision

RegionReader = Callable[[Sequence[int]], np.ndarray]  # face keys (rows) -> uint8 (B, H, W) labels into REGIONS


class _SharedPasses:
    """The model's standardized outputs (every attribute) of the last batch of occluded images: captum scores one
    attribute per call, and every attribute occludes the same images, so one set of forward passes serves them all."""

    def __init__(self, net: FaceTraitsNet, precision: str) -> None:
        self.net = net
        self.precision = precision
        self.known: dict[bytes, torch.Tensor] = {}

    def outputs(self, images: torch.Tensor) -> torch.Tensor:
        key = hashlib.blake2b(images.detach().cpu().numpy().tobytes(), digest_size=16).digest()
        if key not in self.known:
            with inference_precision(images.device, self.precision):
                self.known[key] = self.net.standardized(images).float()
        return self.known[key]

    def forget(self) -> None:
        self.known.clear()


class RegionOcclusion(AttributionMethod):
    """Feature ablation over face regions (captum's FeatureAblation, the regions as its feature mask): each region
    in turn is replaced by the `explain.baseline` image, and its pixels get the drop of the standardized prediction.

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
        self.passes = _SharedPasses(net, precision)

    def maps(self, images: torch.Tensor, target: int, keys: Sequence[int] | None = None) -> torch.Tensor:
        keys = range(len(images)) if keys is None else keys
        with torch.no_grad():
            raw = self.attribute(images.detach(), target, keys)
        self.passes.forget()
        return self.to_pixel_map(raw, images.shape[-2:]).float()

    def attribute(self, images: torch.Tensor, target: int, keys: Sequence[int]) -> torch.Tensor:
        labels = torch.from_numpy(self.regions(keys)).to(images.device, torch.long).unsqueeze(1)
        return FeatureAblation(lambda batch: self.passes.outputs(batch)[:, target]).attribute(
            images, baselines=self.references(images), feature_mask=labels,
            perturbations_per_eval=max(1, self.batch_size // len(images)),
        )  # fmt: skip

    def to_pixel_map(self, raw: torch.Tensor, size: torch.Size) -> torch.Tensor:
        return raw[:, 0].abs()  # the same drop in every channel

    @torch.no_grad()
    def region_drops(self, images: torch.Tensor, targets: Sequence[int], keys: Sequence[int]) -> np.ndarray:
        """(len(targets), B, len(REGIONS)) signed drops (positive: the region raised the prediction); NaN where a
        face lacks the region. One set of forward passes serves every target."""
        labels = torch.from_numpy(self.regions(keys)).to(images.device, torch.long)
        drops = np.full((len(targets), len(images), len(REGIONS)), np.nan)
        for position, target in enumerate(targets):
            raw = self.attribute(images.detach(), target, keys)[:, 0]
            for index in range(len(REGIONS)):
                inside = labels == index
                present = inside.flatten(1).any(dim=1)
                values = (raw * inside).flatten(1).sum(dim=1) / inside.flatten(1).sum(dim=1).clamp(min=1)
                drops[position, present.cpu().numpy(), index] = values[present].double().cpu().numpy()
        self.passes.forget()
        return drops
