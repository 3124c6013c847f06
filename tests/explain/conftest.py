"""Synthetic faces and a model whose dependence on the pixels is known exactly: it sees only where mouths are."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from facetraits.data.prepare import prepare_dataset
from facetraits.data.prepared import PreparedData, load_prepared
from facetraits.data.synthetic import REGIONS
from facetraits.models.components.backbones import Backbone
from facetraits.models.components.heads import LinearHeads
from facetraits.models.components.net import FaceTraitsNet
from tests.conftest import study_params

SIZE = 48


class Window(nn.Module):
    """Zeroes every pixel outside a fixed region, so nothing outside it can reach the output."""

    def __init__(self, region: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("region", region.float())

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return images * self.region


def mouth_only_net(
    region: torch.Tensor, attributes: tuple[str, ...] = ("happy",), seed: int = 0, blocks: int = 1
) -> FaceTraitsNet:
    """Window -> 3x3 conv (no bias) -> ReLU [-> (2x2 max-pool -> conv -> ReLU) per further block] -> global mean
    -> linear: output depends on `region` dilated by 1 px only. With 5 blocks the last ReLU sees the face at
    1/16 of its size, like VGG16's block 5 (explain.gradcam_block's default)."""
    torch.manual_seed(seed)
    first = nn.Sequential(Window(region), nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.ReLU())
    stack = [first] + [
        nn.Sequential(nn.MaxPool2d(2), nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.ReLU()) for _ in range(1, blocks)
    ]
    backbone = Backbone(stack, nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten()), 8, stack[-1][2])
    heads = LinearHeads(8, len(attributes), dropout=0.0)
    with torch.no_grad():
        heads.linear.weight.mul_(50.0)  # predictions that move by more than the curves' min_gap
    count = len(attributes)
    return FaceTraitsNet(backbone, heads, torch.zeros(count), torch.ones(count), attributes, SIZE).eval()


@pytest.fixture(scope="session")
def faces(tmp_path_factory: pytest.TempPathFactory) -> PreparedData:
    out = tmp_path_factory.mktemp("explain") / "prepared"
    params = study_params(data={"image_size": SIZE, "synthetic": {"n_faces": 60}, "attributes": ["happy", "dominant"]})
    prepare_dataset(params.data, out, progress=False)
    return load_prepared(out)


@pytest.fixture(scope="session")
def mouth_region(faces: PreparedData) -> torch.Tensor:
    """Every pixel any face's mouth touches: the window the mouth-only model looks through."""
    bit = 1 << REGIONS.index("mouth")
    return torch.from_numpy((faces.masks() & bit).any(axis=0))
