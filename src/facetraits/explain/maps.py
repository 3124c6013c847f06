"""Attribution maps for many faces: batched, streamed from the memory map, with a progress bar."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from facetraits.explain.methods.base import AttributionMethod


def image_batch(images: np.ndarray, rows: Sequence[int], device: torch.device) -> torch.Tensor:
    """uint8 (N, H, W, 3) faces -> float [0, 1] (B, 3, H, W) on the device."""
    batch = torch.from_numpy(np.asarray(images[np.asarray(rows)]))
    return batch.to(device).permute(0, 3, 1, 2).float().div(255)


def attribution_maps(
    method: AttributionMethod,
    images: np.ndarray,
    rows: Sequence[int],
    target: int,
    batch_size: int,
    progress: tqdm | None = None,
) -> np.ndarray:
    """(len(rows), H, W) float32 maps; memory stays at one batch of inputs plus the maps themselves."""
    device = next(method.net.parameters()).device
    rows = np.asarray(rows)
    out = np.zeros((len(rows), *images.shape[1:3]), dtype=np.float32)
    for begin in range(0, len(rows), batch_size):
        chunk = rows[begin : begin + batch_size]
        out[begin : begin + len(chunk)] = method.maps(image_batch(images, chunk, device), target).cpu().numpy()
        if progress is not None:
            progress.update(len(chunk))
    return out
