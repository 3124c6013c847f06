"""One regression output per attribute on top of shared backbone features."""

from __future__ import annotations

import math

import torch
from torch import nn


class LinearHeads(nn.Module):
    """A linear read-out per attribute (one weight row each)."""

    def __init__(self, feature_dim: int, n_attributes: int, dropout: float) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.linear = nn.Linear(feature_dim, n_attributes)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.linear(self.dropout(features))


class MLPHeads(nn.Module):
    """An independent two-layer MLP per attribute, computed for all attributes in one batched einsum.

    The ReLU is a module, not torch.relu: guided backprop (captum) rewrites the gradient of ReLU modules
    only. It has no parameters, so the state dict (and every saved checkpoint) is unchanged.
    """

    def __init__(self, feature_dim: int, n_attributes: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.hidden_weight = nn.Parameter(torch.empty(n_attributes, feature_dim, hidden))
        self.hidden_bias = nn.Parameter(torch.empty(n_attributes, hidden))
        self.out_weight = nn.Parameter(torch.empty(n_attributes, hidden))
        self.out_bias = nn.Parameter(torch.empty(n_attributes))
        self.dropout = nn.Dropout(dropout)
        self.relu = nn.ReLU()
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The same uniform(±1/sqrt(fan_in)) initialisation nn.Linear uses, per attribute."""
        for tensor, fan_in in (
            (self.hidden_weight, self.hidden_weight.shape[1]),
            (self.hidden_bias, self.hidden_weight.shape[1]),
            (self.out_weight, self.out_weight.shape[1]),
            (self.out_bias, self.out_weight.shape[1]),
        ):
            nn.init.uniform_(tensor, -1 / math.sqrt(fan_in), 1 / math.sqrt(fan_in))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        hidden = self.relu(torch.einsum("bd,adh->bah", self.dropout(features), self.hidden_weight) + self.hidden_bias)
        return torch.einsum("bah,ah->ba", self.dropout(hidden), self.out_weight) + self.out_bias


def build_heads(kind: str, feature_dim: int, n_attributes: int, hidden: int, dropout: float) -> nn.Module:
    if kind == "linear":
        return LinearHeads(feature_dim, n_attributes, dropout)
    return MLPHeads(feature_dim, n_attributes, hidden, dropout)
