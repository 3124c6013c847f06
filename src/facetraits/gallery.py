"""Image grids: how faces, masks and heatmaps are shown in MLflow and the report."""

from __future__ import annotations

import numpy as np


def tile(images: np.ndarray, columns: int, gap: int = 2, fill: int = 255) -> np.ndarray:
    """(k, H, W, C) uint8 images laid out row by row into one (rows*H, columns*W, C) image."""
    count, height, width, channels = images.shape
    rows = -(-count // columns)
    grid = np.full(
        (rows * height + (rows - 1) * gap, columns * width + (columns - 1) * gap, channels), fill, dtype=np.uint8
    )
    for k in range(count):
        r, c = divmod(k, columns)
        grid[r * (height + gap) : r * (height + gap) + height, c * (width + gap) : c * (width + gap) + width] = images[k]
    return grid


def sample_gallery(images: np.ndarray, count: int, seed: int, columns: int = 8) -> np.ndarray:
    """A seeded random sample of faces, in index order so galleries of equal data look equal."""
    chosen = np.sort(np.random.default_rng(seed).choice(len(images), size=min(count, len(images)), replace=False))
    return tile(np.asarray(images[chosen]), columns=min(columns, len(chosen)))
