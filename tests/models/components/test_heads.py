"""The attribute heads: per-attribute independence, the checkpoint format, and guided backprop through the MLP."""

import torch
from captum.attr import GuidedBackprop
from torch import nn

from facetraits.models.components.heads import MLPHeads


def _heads() -> MLPHeads:
    torch.manual_seed(0)
    return MLPHeads(feature_dim=6, n_attributes=3, hidden=5, dropout=0.0).eval()


def test_mlp_heads_are_independent_two_layer_mlps_with_the_checkpoint_state_dict() -> None:
    heads = _heads()
    assert list(heads.state_dict()) == ["hidden_weight", "hidden_bias", "out_weight", "out_bias"], (
        "the keys every saved checkpoint holds: the ReLU module adds none"
    )
    features = torch.randn(4, 6)
    for a in range(3):
        hidden = torch.clamp(features @ heads.hidden_weight[a] + heads.hidden_bias[a], min=0)
        torch.testing.assert_close(heads(features)[:, a], hidden @ heads.out_weight[a] + heads.out_bias[a])


def test_guided_backprop_rewrites_the_mlp_relu() -> None:
    """Guided backprop passes only positive gradients back through a ReLU module; torch.relu it cannot see."""
    heads = _heads()
    assert any(isinstance(m, nn.ReLU) for m in heads.modules())
    features = torch.randn(2, 6)
    guided = GuidedBackprop(heads).attribute(features.clone().requires_grad_(True), target=1)
    active = (features @ heads.hidden_weight[1] + heads.hidden_bias[1] > 0).float()
    expected = (active * heads.out_weight[1].clamp(min=0)) @ heads.hidden_weight[1].T
    torch.testing.assert_close(guided, expected)
    plain = (active * heads.out_weight[1]) @ heads.hidden_weight[1].T
    assert not torch.allclose(guided, plain), "the rewrite changes the gradient"
