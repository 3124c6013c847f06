"""Deletion and insertion curves (Petsiuk et al. 2018, RISE), adapted to a regression output.

A classifier's class probability runs from 1 to 0 as evidence is deleted; a predicted rating can move
either way. Each step's prediction f_k is therefore expressed as the share of the gap between the face
and its fully-removed reference that remains: r_k = (f_k - f(reference)) / (f(face) - f(reference)).
r runs from 1 (the face) to 0 (the reference) on every face, whichever side of the mean it lies.
Deletion replaces the most relevant pixels first (faithful maps: low AUC); insertion reveals them
first, starting from the reference (faithful maps: high AUC). Faces whose prediction barely differs
from their reference's (gap below `min_gap` standardized units) say nothing and are left out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from facetraits.explain.randomness import face_generator
from facetraits.models.components.net import FaceTraitsNet
from facetraits.models.inference import inference_precision


@dataclass(frozen=True)
class PerturbationCurves:
    deletion: np.ndarray  # (faces, steps + 1), NaN rows for faces left out
    insertion: np.ndarray

    @property
    def used(self) -> int:
        return int(np.isfinite(self.deletion[:, 0]).sum())

    def deletion_auc(self) -> float:
        return _mean_auc(self.deletion)

    def insertion_auc(self) -> float:
        return _mean_auc(self.insertion)

    def face_aucs(self) -> dict[str, np.ndarray]:
        """Each face's deletion and insertion AUC (NaN for a face left out): what intervals are drawn from."""
        return {"deletion_auc": _face_aucs(self.deletion), "insertion_auc": _face_aucs(self.insertion)}

    @staticmethod
    def concatenate(parts: Sequence[PerturbationCurves]) -> PerturbationCurves:
        """The curves of faces scored batch by batch, as one set."""
        return PerturbationCurves(
            np.concatenate([p.deletion for p in parts]), np.concatenate([p.insertion for p in parts])
        )


def _face_aucs(curves: np.ndarray) -> np.ndarray:
    return np.trapezoid(curves, np.linspace(0.0, 1.0, curves.shape[1]), axis=1)


def _mean_auc(curves: np.ndarray) -> float:
    finite = curves[np.isfinite(curves[:, 0])]
    if not len(finite):
        return float("nan")
    x = np.linspace(0.0, 1.0, curves.shape[1])
    return float(np.mean(np.trapezoid(finite, x, axis=1)))


def _step_masks(maps: torch.Tensor, steps: int, keys: Sequence[int], seed: int) -> torch.Tensor:
    """(faces, steps + 1, H*W) bool: the first k/steps of pixels in descending relevance, k = 0..steps.

    Tied pixels (the zero plateau of a ReLU'd Grad-CAM map) are taken in a random order drawn from each
    face's own seeded stream, not top-left first, which would favour whatever lies at the top of a face.
    """
    faces, pixels = maps.shape[0], maps[0].numel()
    shuffle = torch.stack(
        [torch.randperm(pixels, generator=face_generator(seed, int(k), maps.device), device=maps.device) for k in keys]
    )
    shuffled = maps.reshape(faces, -1).gather(1, shuffle)
    order = shuffle.gather(1, torch.argsort(shuffled, dim=1, descending=True, stable=True))
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(pixels, device=maps.device).expand(faces, -1))
    counts = torch.round(torch.linspace(0, pixels, steps + 1, device=maps.device)).long()
    return rank.unsqueeze(1) < counts.view(1, -1, 1)


def _step_predictions(
    net: FaceTraitsNet, chosen: torch.Tensor, where_chosen: torch.Tensor, elsewhere: torch.Tensor, batch_size: int,
    precision: str,
) -> np.ndarray:
    """(faces, steps, outputs) standardized predictions; perturbed images are built `batch_size` at a time."""
    faces, count = chosen.shape[:2]
    height, width = where_chosen.shape[-2:]
    predictions = []
    for index in torch.arange(faces * count, device=chosen.device).split(batch_size):
        face, step = index // count, index % count
        mask = chosen[face, step].view(len(index), 1, height, width)
        with inference_precision(chosen.device, precision):
            predictions.append(net.standardized(torch.where(mask, where_chosen[face], elsewhere[face])).float())
    return torch.cat(predictions).view(faces, count, -1).double().cpu().numpy()


@torch.no_grad()
def curve_ends(
    net: FaceTraitsNet, images: torch.Tensor, references: torch.Tensor, batch_size: int, precision: str = "32-true"
) -> np.ndarray:
    """(B, 2, outputs) standardized predictions of each face and of its reference: the ends of every deletion and
    insertion curve of the face, whatever the map, so one set of passes can serve every method and attribute."""
    both = torch.stack([images, references], dim=1).flatten(0, 1)
    predictions = []
    for chunk in both.split(batch_size):
        with inference_precision(images.device, precision):
            predictions.append(net.standardized(chunk).float())
    return torch.cat(predictions).view(len(images), 2, -1).double().cpu().numpy()


@torch.no_grad()
def perturbation_curves(
    net: FaceTraitsNet,
    images: torch.Tensor,
    maps: torch.Tensor,
    references: torch.Tensor,
    targets: Sequence[int],
    steps: int,
    batch_size: int,
    keys: Sequence[int],
    seed: int,
    precision: str = "32-true",
    min_gap: float = 0.05,
    ends: np.ndarray | None = None,
) -> list[PerturbationCurves]:
    """images and references (B, 3, H, W) in [0, 1], maps (B, H, W); curves of each of `targets`' outputs.

    One forward pass per face and step serves every target, so a map shared by several attributes (the
    random-order reference) costs one set of passes. Both curves run between the face and its reference, so only
    their inner steps depend on the map; `ends` (`curve_ends` of these faces, computed when not given) lets the
    caller predict those once for all its maps. `keys` (the faces' rows) and `seed` draw the order of tied pixels.
    """
    ends = curve_ends(net, images, references, batch_size, precision) if ends is None else ends
    chosen = _step_masks(maps, steps, keys, seed)[:, 1:-1]
    removed = _step_predictions(net, chosen, references, images, batch_size, precision)
    inserted = _step_predictions(net, chosen, images, references, batch_size, precision)
    face, reference = ends[:, :1], ends[:, 1:]
    deletion = np.concatenate([face, removed, reference], axis=1)
    insertion = np.concatenate([reference, inserted, face], axis=1)
    return [_relative_curves(deletion[..., target], insertion[..., target], min_gap) for target in targets]


def _relative_curves(deletion: np.ndarray, insertion: np.ndarray, min_gap: float) -> PerturbationCurves:
    start, end = deletion[:, 0], deletion[:, -1]  # the face itself; the reference
    gap = start - end
    usable = np.abs(gap) >= min_gap
    safe_gap = np.where(usable, gap, 1.0)[:, None]
    nan = np.full_like(deletion, np.nan)
    return PerturbationCurves(
        deletion=np.where(usable[:, None], (deletion - end[:, None]) / safe_gap, nan),
        insertion=np.where(usable[:, None], (insertion - end[:, None]) / safe_gap, nan),
    )
