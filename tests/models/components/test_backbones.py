from pathlib import Path

import pytest
import torch
from torchvision import models

from facetraits.errors import ConfigError
from facetraits.models.components.backbones import build_backbone


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
    with pytest.raises(ConfigError, match=r"vgg16-397923af.pth under \$TORCH_HOME/hub/checkpoints"):
        build_backbone("vgg16", "imagenet", 1, 32)


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


@pytest.mark.parametrize(("name", "dim"), [("vgg16", 512), ("vgg16_bn", 512), ("resnet18", 512), ("vit_b_16", 768)])
def test_every_backbone_gives_pooled_features(name: str, dim: int) -> None:
    backbone = build_backbone(name, "none", 1, 32).eval()
    with torch.no_grad():
        assert backbone(torch.rand(2, 3, 32, 32)).shape == (2, dim)
    assert backbone.feature_dim == dim


def test_frozen_batchnorm_blocks_stay_in_eval_mode() -> None:
    backbone = build_backbone("resnet18", "none", 1, 32).train()
    assert not backbone.blocks[0].training and backbone.blocks[-1].training
