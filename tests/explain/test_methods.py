"""Every attribution method on a real VGG16 and on a model with known dependence."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from facetraits.config import METHOD_NAMES, ExplainParams
from facetraits.errors import ConfigError
from facetraits.explain.maps import image_batch
from facetraits.explain.methods import build_method
from facetraits.explain.methods.base import baseline_images, gradcam_layer
from facetraits.models.components.backbones import build_backbone
from facetraits.models.components.heads import build_heads
from facetraits.models.components.net import FaceTraitsNet
from tests.explain.conftest import SIZE, mouth_only_net

PARAMS = ExplainParams(ig_steps=4, shap_samples=2, noise_samples=2, gradcam_block=1)


def vgg_net(backbone: str = "vgg16_bn", size: int = 32) -> FaceTraitsNet:
    torch.manual_seed(0)
    trunk = build_backbone(backbone, "none", 5, size)
    heads = build_heads("mlp", trunk.feature_dim, 2, 8, 0.0)
    return FaceTraitsNet(trunk, heads, torch.zeros(2), torch.ones(2), ("happy", "dominant"), size).eval()


@pytest.mark.parametrize("method", METHOD_NAMES)
def test_every_method_gives_one_non_negative_pixel_map_per_face_on_vgg16(method: str) -> None:
    net = vgg_net()
    images = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    maps = build_method(method, net, ExplainParams(ig_steps=4, shap_samples=2, noise_samples=2)).maps(images, 1)
    assert maps.shape == (3, 32, 32)
    assert torch.isfinite(maps).all() and (maps >= 0).all() and (maps.flatten(1).sum(1) > 0).all()
    assert not images.requires_grad, "the caller's batch is left untouched"


def test_vgg_relus_are_out_of_place_so_guided_backprop_hooks_work() -> None:
    net = vgg_net("vgg16")
    assert not any(m.inplace for m in net.modules() if isinstance(m, nn.ReLU))
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    first = build_method("guided_gradcam", net, ExplainParams()).maps(images, 0)
    again = build_method("guided_gradcam", net, ExplainParams()).maps(images, 0)
    assert torch.equal(first, again), "hooks are removed after each call"
    assert not any(m._backward_hooks or m._forward_hooks for m in net.modules())


@pytest.mark.parametrize("method", METHOD_NAMES)
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
