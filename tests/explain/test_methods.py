"""Every attribution method on a real VGG16 and on a model with known dependence."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch import nn

from facetraits.config import METHOD_NAMES, ExplainParams
from facetraits.errors import ConfigError
from facetraits.explain.maps import image_batch
from facetraits.explain.methods import build_method
from facetraits.explain.methods.base import baseline_images, gradcam_layer
from facetraits.models.components.backbones import Backbone, build_backbone
from facetraits.models.components.heads import LinearHeads, build_heads
from facetraits.models.components.net import FaceTraitsNet
from tests.explain.conftest import SIZE, mouth_only_net

PARAMS = ExplainParams(ig_steps=4, shap_samples=2, noise_samples=2, gradcam_block=1)
GRADIENT_METHODS = [m for m in METHOD_NAMES if m != "region_occlusion"]


def quadrants(keys) -> np.ndarray:
    """Region labels for any face of 32 px: four quadrants (region occlusion needs the faces' regions)."""
    labels = np.zeros((32, 32), dtype=np.uint8)
    labels[:16, 16:], labels[16:, :16], labels[16:, 16:] = 1, 2, 3
    return np.broadcast_to(labels, (len(keys), 32, 32)).copy()


def vgg_net(backbone: str = "vgg16_bn", size: int = 32) -> FaceTraitsNet:
    torch.manual_seed(0)
    trunk = build_backbone(backbone, "none", 5, size)
    heads = build_heads("mlp", trunk.feature_dim, 2, 8, 0.0)
    return FaceTraitsNet(trunk, heads, torch.zeros(2), torch.ones(2), ("happy", "dominant"), size).eval()


@pytest.mark.parametrize("method", METHOD_NAMES)
def test_every_method_gives_one_non_negative_pixel_map_per_face_on_vgg16(method: str) -> None:
    net = vgg_net()
    images = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    params = ExplainParams(ig_steps=4, shap_samples=2, noise_samples=2)
    maps = build_method(method, net, params, quadrants).maps(images, 1)
    assert maps.shape == (3, 32, 32)
    assert torch.isfinite(maps).all() and (maps >= 0).all() and (maps.flatten(1).sum(1) > 0).all()
    assert not images.requires_grad, "the caller's batch is left untouched"
    built = build_method(method, net, PARAMS, quadrants)
    assert built.name == method, "each name in params.yaml is built by the class of that name"


def test_vgg_relus_are_out_of_place_so_guided_backprop_hooks_work() -> None:
    net = vgg_net("vgg16")
    assert not any(m.inplace for m in net.modules() if isinstance(m, nn.ReLU))
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    first = build_method("guided_gradcam", net, ExplainParams()).maps(images, 0)
    again = build_method("guided_gradcam", net, ExplainParams()).maps(images, 0)
    assert torch.equal(first, again), "hooks are removed after each call"
    assert not any(m._backward_hooks or m._forward_hooks for m in net.modules())


def test_guided_backprop_does_not_warn_about_its_own_hooks_and_leaves_the_filters_as_they_were() -> None:
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    with warnings.catch_warnings(record=True) as shown:
        warnings.resetwarnings()  # pyproject's filterwarnings hides this one from every other test
        filters = list(warnings.filters)
        build_method("guided_gradcam", vgg_net("vgg16"), ExplainParams()).maps(images, 0)
        assert warnings.filters == filters
    assert not [w for w in shown if "backward hooks" in str(w.message)]


@pytest.mark.parametrize("block", [3, 5])
@pytest.mark.parametrize("method", ["gradcam", "guided_gradcam"])
def test_mobilenet_layer_methods_read_its_blocks_and_guided_backprop_is_guided(method: str, block: int) -> None:
    net = vgg_net("mobilenet_v2", size=64)
    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(4))
    maps = build_method(method, net, ExplainParams(gradcam_block=block)).maps(images, 1)
    assert maps.shape == (2, 64, 64) and torch.isfinite(maps).all() and (maps.flatten(1).sum(1) > 0).all()
    assert not any(m._backward_hooks or m._forward_hooks for m in net.modules())
    expected = net.backbone.attribution_layer if block == 5 else net.backbone.blocks[block - 1]
    assert gradcam_layer(net.backbone, block) is expected


def test_guided_backprop_rewrites_mobilenet_clipped_relus() -> None:
    """captum guides nn.ReLU modules only: MobileNet's ReLU6 is one, so guided maps differ from plain gradients."""
    from captum.attr import GuidedBackprop, Saliency

    net = vgg_net("mobilenet_v2", size=64)
    images = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(5))
    guided = GuidedBackprop(net).attribute(images.clone(), target=0)
    plain = Saliency(net).attribute(images.clone(), target=0, abs=False)
    scale = plain.abs().max()  # a random MobileNet's gradients are tiny: compare relative to their size
    assert scale > 0 and (guided - plain).abs().max() > 0.1 * scale


@pytest.mark.parametrize("method", GRADIENT_METHODS)  # region occlusion spreads a region's drop over all of it
def test_no_relevance_outside_what_the_model_can_see(method: str, faces, mouth_region) -> None:
    net = mouth_only_net(mouth_region)
    images = image_batch(faces.images, range(6), torch.device("cpu"))
    maps = build_method(method, net, PARAMS).maps(images, 0).numpy()
    visible = torch.nn.functional.max_pool2d(mouth_region.float()[None, None], 3, stride=1, padding=1)[0, 0].bool()
    outside = maps[:, ~visible.numpy()]
    assert maps.sum() > 0
    assert outside.sum() <= 1e-6 * maps.sum(), f"{method} puts relevance where the model cannot look"


def test_gradcam_layer_is_the_last_relu_of_a_vgg_block_and_refuses_vit() -> None:
    net = vgg_net("vgg16")
    assert gradcam_layer(net.backbone, 5) is net.backbone.attribution_layer
    assert gradcam_layer(net.backbone, 2) is [m for m in net.backbone.blocks[1] if isinstance(m, nn.ReLU)][-1]
    with pytest.raises(ConfigError, match="gradcam_block: must be 1..5"):
        gradcam_layer(net.backbone, 6)
    vit = build_backbone("vit_b_16", "none", 0, 32)
    with pytest.raises(ConfigError, match="ViT"):
        gradcam_layer(vit, 5)


def test_baselines_remove_detail_but_keep_each_face_colour() -> None:
    images = torch.rand(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(3))
    mean = baseline_images(images, "mean", 0.1)
    assert torch.allclose(mean, images.mean(dim=(2, 3), keepdim=True).expand_as(images))
    blurred = baseline_images(images, "blur", 0.1)
    assert blurred.shape == images.shape
    assert blurred.std() < 0.5 * images.std()
    assert torch.allclose(blurred.mean(dim=(2, 3)), images.mean(dim=(2, 3)), atol=0.03)


def linear_net() -> FaceTraitsNet:
    """Conv -> global mean -> linear, no non-linearity: every gradient is the same constant."""
    torch.manual_seed(4)
    block = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1))
    backbone = Backbone([block], nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten()), 4, block[0])
    return FaceTraitsNet(backbone, LinearHeads(4, 1, 0.0), torch.zeros(1), torch.ones(1), ("happy",), SIZE).eval()


def test_without_noise_gradient_shap_is_integrated_gradients_from_each_face_own_reference(faces) -> None:
    """On a linear model both are exactly gradient x (face - reference); a reference borrowed from another face
    in the batch (captum's GradientShap with the batch's baselines) would break the equality."""
    net, images = linear_net(), image_batch(faces.images, range(5), torch.device("cpu"))
    params = ExplainParams(noise_stdev=0.0, shap_samples=3, noise_samples=3, ig_steps=4)
    shap = build_method("gradient_shap", net, params).maps(images, 0)
    torch.testing.assert_close(shap, build_method("integrated_gradients", net, params).maps(images, 0))
    smoothgrad = build_method("smoothgrad", net, params).maps(images, 0)
    torch.testing.assert_close(smoothgrad, build_method("saliency", net, params).maps(images, 0))


@pytest.mark.parametrize("method", ["integrated_gradients", "gradient_shap", "smoothgrad"])
def test_many_pass_methods_send_at_most_batch_size_images_through_the_model(method: str, faces, mouth_region) -> None:
    net = mouth_only_net(mouth_region)
    params = ExplainParams(ig_steps=6, shap_samples=4, noise_samples=4, batch_size=5)
    seen: list[int] = []
    hook = net.backbone.register_forward_pre_hook(lambda module, args: seen.append(len(args[0])))
    build_method(method, net, params).maps(image_batch(faces.images, range(4), torch.device("cpu")), 0)
    hook.remove()
    assert max(seen) <= 5 and sum(seen) >= 4 * 4, f"{method}: passes of {seen} images"


@pytest.mark.parametrize("method", ["gradient_shap", "smoothgrad"])
def test_sampled_maps_depend_on_the_face_key_not_its_batch_or_global_generators(method, faces, mouth_region) -> None:
    net = mouth_only_net(mouth_region)
    images = image_batch(faces.images, range(4), torch.device("cpu"))
    attribution = build_method(method, net, ExplainParams(shap_samples=2, noise_samples=2))
    together = attribution.maps(images, 0, [10, 11, 12, 13])
    torch.manual_seed(99)
    np.random.seed(99)
    alone = torch.cat([attribution.maps(images[i : i + 1], 0, [10 + i]) for i in range(4)])
    torch.testing.assert_close(alone, together)
    assert not torch.equal(attribution.maps(images, 0, [20, 21, 22, 23]), together), "other keys, other samples"
