"""Attribution maps for many faces: batched, streamed from the memory map, with a progress bar."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from facetraits.batching import batches
from facetraits.explain.methods.base import AttributionMethod
from facetraits.models.inference import image_tensor


def image_batch(images: np.ndarray, rows: Sequence[int], device: torch.device) -> torch.Tensor:
    """The faces at `rows` of uint8 (N, H, W, 3) images as the model's input, on the device."""
    return image_tensor(images[np.asarray(rows)], device)


def map_batches(
    method: AttributionMethod,
    images: np.ndarray,
    rows: Sequence[int],
    target: int,
    batch_size: int,
    progress: tqdm | None = None,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(rows, their (B, H, W) float32 maps) batch by batch: memory holds one batch, whatever len(rows).

    Each face is keyed by its row, so a sampling method draws the same samples for it in any batch.
    """
    device = next(method.net.parameters()).device
    rows = np.asarray(rows)
    for part in batches(len(rows), batch_size):
        chunk = rows[part]
        maps = method.maps(image_batch(images, chunk, device), target, chunk.tolist()).cpu().numpy()
        if progress is not None:
            progress.update(len(chunk))
        yield chunk, maps


def attribution_maps(
    method: AttributionMethod,
    images: np.ndarray,
    rows: Sequence[int],
    target: int,
    batch_size: int,
    progress: tqdm | None = None,
) -> np.ndarray:
    """(len(rows), H, W) float32 maps, for the few faces whose maps are kept."""
    batches = map_batches(method, images, rows, target, batch_size, progress)
    return np.concatenate([np.zeros((0, *images.shape[1:3]), dtype=np.float32), *(maps for _, maps in batches)])


def unit_sum(maps: np.ndarray) -> np.ndarray:
    """Each map scaled to sum 1, so every face weighs the same in a mean whatever its map's scale (zero maps stay 0)."""
    totals = maps.reshape(len(maps), -1).sum(axis=1, dtype=np.float64)
    return maps / np.where(totals > 0, totals, 1.0)[:, None, None]


@dataclass
class RunningMean:
    """Mean over faces of per-face values or maps, added batch by batch; faces with a NaN (undefined) are left out."""

    total: float | np.ndarray = 0.0
    count: int = 0

    def add(self, values: np.ndarray) -> None:
        defined = values[np.isfinite(values.reshape(len(values), -1)).all(axis=1)]
        self.total = self.total + defined.sum(axis=0, dtype=np.float64)
        self.count += len(defined)

    def mean(self) -> float | np.ndarray:
        """NaN when no face was defined, e.g. every map all-zero."""
        return self.total / self.count if self.count else float("nan")
