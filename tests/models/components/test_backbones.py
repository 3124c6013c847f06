from pathlib import Path

import pytest
import torch
from torchvision import models

from facetraits.errors import ConfigError
from facetraits.models.components.backbones import build_backbone
from tests.conftest import OMI_DEV


@pytest.fixture(scope="module")
def vgg_state(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, torch.Tensor]]:
    """A VGG16 state dict saved where torchvision's ImageNet weights would be cached (TORCH_HOME)."""
    torch_home = tmp_path_factory.mktemp("torch_home")
    torch.manual_seed(123)
    state = models.vgg16().state_dict()
    target = torch_home / "hub" / "checkpoints" / Path(models.VGG16_Weights.IMAGENET1K_V1.url).name
    target.parent.mkdir(parents=True)
    torch.save(state, target)
    return torch_home, state


def test_imagenet_weights_come_from_a_preseeded_torch_home_offline(vgg_state, monkeypatch) -> None:
    torch_home, state = vgg_state
    monkeypatch.setenv("TORCH_HOME", str(torch_home))
    # a stand-in for torchvision's file, which fails its hash (tests/test_weights.py checks that refusal)
    monkeypatch.setattr("facetraits.weights.verify_weights_file", lambda path: None)
    backbone = build_backbone("vgg16", "imagenet", trainable_blocks=0, image_size=32)
    torch.testing.assert_close(backbone.blocks[0][0].weight, state["features.0.weight"])
    torch.testing.assert_close(backbone.blocks[4][-3].weight, state["features.28.weight"])


def test_local_state_dict_file(vgg_state) -> None:
    torch_home, state = vgg_state
    path = next((torch_home / "hub" / "checkpoints").iterdir())
    backbone = build_backbone("vgg16", str(path), trainable_blocks=5, image_size=32)
    torch.testing.assert_close(backbone.blocks[2][0].weight, state["features.10.weight"])


def test_no_weights_is_random_and_missing_imagenet_file_says_where_to_put_it(tmp_path: Path, monkeypatch) -> None:
    torch.manual_seed(0)
    first = build_backbone("vgg16", "none", 1, 32).blocks[0][0].weight.clone()
    torch.manual_seed(1)
    assert not torch.equal(first, build_backbone("vgg16", "none", 1, 32).blocks[0][0].weight)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr("torch.hub.download_url_to_file", _offline)
    with pytest.raises(ConfigError, match=r"vgg16-397923af.pth under \$TORCH_HOME/hub/checkpoints or give"):
        build_backbone("vgg16", "imagenet", 1, 32)
    installable = r"mobilenet_v2-b0353104.pth under \$TORCH_HOME/hub/checkpoints \(`facetraits weights mobilenet_v2`"
    with pytest.raises(ConfigError, match=installable):
        build_backbone("mobilenet_v2", "imagenet", 1, 32)


def _offline(*args, **kwargs):
    raise OSError("no network on this machine")


def test_wrong_weights_file_is_named(tmp_path: Path) -> None:
    resnet_file = tmp_path / "resnet.pt"
    torch.save(models.resnet18().state_dict(), resnet_file)
    with pytest.raises(ConfigError, match=rf"{resnet_file} does not fit a torchvision vgg16"):
        build_backbone("vgg16", str(resnet_file), 1, 32)
    with pytest.raises(ConfigError, match="not found"):
        build_backbone("vgg16", str(tmp_path / "nope.pt"), 1, 32)
    pickled = tmp_path / "code.pt"
    torch.save({"layer": torch.nn.Linear(2, 2)}, pickled)
    with pytest.raises(ConfigError, match="is not a loadable state dict"):
        build_backbone("vgg16", str(pickled), 1, 32)


@pytest.mark.parametrize(("count", "trainable_parameters"), [(0, 0), (1, 6), (5, 26)])
def test_trainable_blocks_freeze_from_the_input_side(count: int, trainable_parameters: int) -> None:
    backbone = build_backbone("vgg16", "none", count, 32)
    assert sum(p.requires_grad for p in backbone.parameters()) == trainable_parameters
    assert all(p.requires_grad for p in backbone.blocks[-1].parameters()) == (count > 0)
    assert not any(isinstance(m, torch.nn.ReLU) and m.inplace for m in backbone.modules())


@pytest.mark.parametrize(
    ("name", "dim"), [("vgg16", 512), ("vgg16_bn", 512), ("resnet18", 512), ("vit_b_16", 768), ("mobilenet_v2", 1280)]
)
def test_every_backbone_gives_pooled_features(name: str, dim: int) -> None:
    backbone = build_backbone(name, "none", 1, 32).eval()
    with torch.no_grad():
        assert backbone(torch.rand(2, 3, 32, 32)).shape == (2, dim)
    assert backbone.feature_dim == dim


def test_frozen_batchnorm_blocks_stay_in_eval_mode() -> None:
    backbone = build_backbone("resnet18", "none", 1, 32).train()
    assert not backbone.blocks[0].training and backbone.blocks[-1].training


def test_mobilenet_blocks_end_where_resolution_halves_and_freeze_from_the_input() -> None:
    backbone = build_backbone("mobilenet_v2", "none", 2, 64).eval()
    sizes, maps = [], torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        for block in backbone.blocks:
            maps = block(maps)
            sizes.append(maps.shape[-1])
    assert sizes == [32, 16, 8, 4, 2] and maps.shape[1] == 1280
    trainable = [any(p.requires_grad for p in block.parameters()) for block in backbone.blocks]
    assert trainable == [False, False, False, True, True]
    relus = [m for m in backbone.modules() if isinstance(m, torch.nn.ReLU)]
    assert relus and all(not m.inplace for m in relus), "guided backprop needs nn.ReLU modules, out of place"
    assert not any(isinstance(m, torch.nn.ReLU6) for m in backbone.modules())
    assert backbone.attribution_layer is backbone.blocks[-1][-1][-1]


def test_avgmax_pool_doubles_features_and_vit_refuses_it() -> None:
    backbone = build_backbone("mobilenet_v2", "none", 0, 32, pool="avgmax").eval()
    maps = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        pooled, last = backbone(maps), maps
        for block in backbone.blocks:
            last = block(last)
    assert backbone.feature_dim == 2560
    torch.testing.assert_close(pooled, torch.cat([last.mean(dim=(2, 3)), last.amax(dim=(2, 3))], dim=1))
    with pytest.raises(ConfigError, match="model.pool: avgmax pools feature maps; vit_b_16"):
        build_backbone("vit_b_16", "none", 0, 32, pool="avgmax")


@pytest.mark.slow
def test_mobilenet_imagenet_file_gives_torchvision_reference_outputs(mobilenet_imagenet: Path) -> None:
    """The installed file, loaded by our backbone, computes what torchvision's own ImageNet model computes."""
    from PIL import Image

    reference = models.mobilenet_v2(weights=models.MobileNet_V2_Weights.IMAGENET1K_V1).eval()
    backbone = build_backbone("mobilenet_v2", "imagenet", 0, 224).eval()
    ours, theirs = list(backbone.state_dict().values()), list(reference.features.state_dict().values())
    assert len(ours) == len(theirs) and all(torch.equal(a, b) for a, b in zip(ours, theirs, strict=True))
    faces = sorted((OMI_DEV / "images").glob("*.jpg"))[:2]  # a real face where the data set is at hand
    transform = models.MobileNet_V2_Weights.IMAGENET1K_V1.transforms()
    pixels = torch.stack([transform(Image.open(f).convert("RGB")) for f in faces]) if faces else torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        expected = reference.features(pixels).mean(dim=(2, 3))
        torch.testing.assert_close(backbone(pixels), expected, rtol=1e-5, atol=1e-5)
        # and it is an ImageNet model: the classifier on our features picks the reference's class
        assert torch.equal(reference.classifier(backbone(pixels)).argmax(1), reference(pixels).argmax(1))
