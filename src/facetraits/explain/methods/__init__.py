"""The attribution methods by name, built from the explain parameters."""

from __future__ import annotations

from facetraits.config import METHOD_NAMES, ExplainParams
from facetraits.errors import ConfigError
from facetraits.explain.methods.base import AttributionMethod
from facetraits.explain.methods.gradcam import GradCam
from facetraits.explain.methods.gradient_shap import GradientShap
from facetraits.explain.methods.guided_gradcam import GuidedGradCam
from facetraits.explain.methods.integrated_gradients import IntegratedGradients
from facetraits.explain.methods.region_occlusion import RegionOcclusion, RegionReader
from facetraits.explain.methods.saliency import Saliency, SmoothGrad
from facetraits.models.components.net import FaceTraitsNet


def build_method(
    name: str, net: FaceTraitsNet, params: ExplainParams, regions: RegionReader | None = None,
    precision: str = "32-true",
) -> AttributionMethod:  # fmt: skip
    """`regions`: the faces' region labels by row, which region occlusion needs (the explain stage has them);
    `precision`: the study's, for region occlusion's forward passes (gradient methods stay fp32)."""
    common = {"baseline": params.baseline, "blur_sigma": params.blur_sigma}
    sampled = {**common, "stdev": params.noise_stdev, "seed": params.seed, "batch_size": params.batch_size}
    builders = {
        GradCam.name: lambda: GradCam(net, block=params.gradcam_block, **common),
        GuidedGradCam.name: lambda: GuidedGradCam(net, block=params.gradcam_block, **common),
        IntegratedGradients.name: lambda: IntegratedGradients(
            net, steps=params.ig_steps, batch_size=params.batch_size, **common
        ),
        GradientShap.name: lambda: GradientShap(net, samples=params.shap_samples, **sampled),
        Saliency.name: lambda: Saliency(net, **common),
        SmoothGrad.name: lambda: SmoothGrad(net, samples=params.noise_samples, **sampled),
        RegionOcclusion.name: lambda: RegionOcclusion(
            net, regions=regions, batch_size=params.batch_size, precision=precision, **common
        ),
    }
    if name not in builders:
        raise ConfigError(f"explain.methods: unknown method '{name}'; known: {list(METHOD_NAMES)}")
    if name == RegionOcclusion.name and regions is None:
        raise ConfigError("region_occlusion needs the faces' regions: it explains prepared faces (the explain stage)")
    return builders[name]()
