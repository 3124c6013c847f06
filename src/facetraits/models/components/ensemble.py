"""Several trained networks as one: each attribute's rating is a weighted sum of the members' ratings."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class WeightedEnsemble(nn.Module):
    """Members that rate the same attributes from the same image size, combined with per-attribute weights.

    The weights are data, not parameters: the ensemble stage chooses them on val, and nothing trains them.
    """

    def __init__(self, members: Sequence[nn.Module], weights: torch.Tensor) -> None:
        super().__init__()
        first = members[0]
        if any(m.attributes != first.attributes or m.image_size != first.image_size for m in members):
            raise ValueError("ensemble members must rate the same attributes from the same image size")
        if tuple(weights.shape) != (len(first.attributes), len(members)):
            raise ValueError(f"weights must be (attributes, members) = {(len(first.attributes), len(members))}")
        self.members = nn.ModuleList(members)
        self.attributes = first.attributes
        self.image_size = first.image_size
        self.register_buffer("weights", weights.detach().clone().float())

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        ratings = torch.stack([member(images) for member in self.members], dim=-1)  # (batch, attributes, members)
        return (ratings * self.weights).sum(dim=-1)
