"""Batch augmentation on tensors (on the GPU when the batch is there): horizontal flip and small rotations."""

from __future__ import annotations

import math

import torch
from torch.nn import functional as F


def augment_batch(
    images: torch.Tensor, hflip: float, rotation_deg: float, strength: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Flip each face with probability hflip*strength and rotate it by U(±rotation_deg*strength).

    `strength` 0 turns augmentation off; faces stay aligned enough that mean heatmaps remain meaningful.
    """
    batch = images.shape[0]
    flip_probability = min(1.0, hflip * strength)
    max_angle = math.radians(rotation_deg * strength)
    if flip_probability == 0 and max_angle == 0:
        return images
    device = images.device
    flips = torch.rand(batch, generator=generator, device=device) < flip_probability
    angles = (torch.rand(batch, generator=generator, device=device) * 2 - 1) * max_angle
    cos, sin = torch.cos(angles), torch.sin(angles)
    sign = torch.where(flips, -1.0, 1.0)
    theta = torch.zeros(batch, 2, 3, device=device, dtype=images.dtype)
    theta[:, 0, 0], theta[:, 0, 1] = cos * sign, -sin
    theta[:, 1, 0], theta[:, 1, 1] = sin * sign, cos
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)
