"""Every attribute x method of a trained model: maps for chosen test faces and their scores."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

from facetraits.config import ExplainParams
from facetraits.data.prepared import PreparedData
from facetraits.data.synthetic import relevance_mask
from facetraits.errors import ConfigError, DataError
from facetraits.explain.maps import attribution_maps, image_batch
from facetraits.explain.methods import build_method
from facetraits.explain.methods.base import baseline_images
from facetraits.explain.scores.faithfulness import perturbation_curves
from facetraits.explain.scores.ground_truth import mask_area_fraction, relevance_mass_accuracy, relevance_rank_accuracy
from facetraits.explain.scores.sanity import map_rank_correlation, randomized_copy
from facetraits.models.components.net import FaceTraitsNet
from facetraits.models.training import predict_images

ROLES = ("highest", "lowest", "random")


@dataclass(frozen=True)
class FaceSelection:
    """Test faces to explain: `rows` into the prepared data, and which of them serve which purpose."""

    rows: np.ndarray
    predicted: np.ndarray
    gallery: np.ndarray  # positions into rows, ordered highest, lowest, random
    gallery_roles: tuple[str, ...]
    mean: np.ndarray  # positions into rows averaged for the mean map and scored against ground truth
    scored: np.ndarray  # positions into rows for deletion/insertion and the randomization check


def select_faces(test_rows: np.ndarray, predicted: np.ndarray, params: ExplainParams) -> FaceSelection:
    """Extremes show what drives high and low impressions; a seeded random sample shows the typical face."""
    gallery_faces, mean_faces, score_faces = params.gallery_faces, params.mean_faces, params.score_faces
    rng = np.random.default_rng(params.seed)
    order = np.argsort(-predicted, kind="stable")
    k = min(gallery_faces, len(test_rows) // 3)
    highest, lowest = order[:k], order[::-1][:k]
    rest = np.setdiff1d(np.arange(len(test_rows)), np.concatenate([highest, lowest]))
    random = np.sort(rng.choice(rest, size=min(k, len(rest)), replace=False))
    sample = np.arange(len(test_rows)) if mean_faces is None else rng.permutation(len(test_rows))[:mean_faces]
    sample = np.sort(sample)
    chosen = np.unique(np.concatenate([highest, lowest, random, sample]))
    position = {int(face): p for p, face in enumerate(chosen)}
    gallery = [position[int(face)] for face in (*highest, *lowest, *random)]
    roles = ("highest",) * len(highest) + ("lowest",) * len(lowest) + ("random",) * len(random)
    mean = np.asarray([position[int(face)] for face in sample])
    scored = mean[np.sort(rng.permutation(len(mean))[:score_faces])]
    return FaceSelection(
        rows=test_rows[chosen], predicted=predicted[chosen], gallery=np.asarray(gallery), gallery_roles=roles,
        mean=mean, scored=scored,
    )  # fmt: skip


@dataclass
class MethodMaps:
    """One method's maps of one attribute, with its scores."""

    attribute: str
    method: str
    maps: np.ndarray  # (len(selection.rows), H, W)
    scores: dict[str, float] = field(default_factory=dict)


@dataclass
class AttributeExplanation:
    attribute: str
    selection: FaceSelection
    methods: list[MethodMaps]
    reference_scores: dict[str, float]  # what a random ordering of pixels scores on the same faces


def mean_defined(values: np.ndarray) -> float:
    """Mean over faces where the score is defined; NaN (written as null) when it is defined for none, e.g. all-zero maps."""
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if len(finite) else float("nan")


def _curve_scores(
    net: FaceTraitsNet, data: PreparedData, rows: np.ndarray, maps: np.ndarray, target: int, params: ExplainParams
) -> dict[str, float]:
    device = next(net.parameters()).device
    images = image_batch(data.images, rows, device)
    curves = perturbation_curves(
        net, images, torch.from_numpy(maps).to(device), baseline_images(images, params.baseline, params.blur_sigma),
        target, params.curve_steps, params.batch_size,
    )  # fmt: skip
    return {"deletion_auc": curves.deletion_auc(), "insertion_auc": curves.insertion_auc(), "curve_faces": curves.used}


def explain_attribute(
    net: FaceTraitsNet,
    randomized: FaceTraitsNet,
    data: PreparedData,
    attribute: str,
    selection: FaceSelection,
    params: ExplainParams,
    progress: tqdm | None = None,
) -> AttributeExplanation:
    target = net.attributes.index(attribute)
    all_masks = data.masks()
    masks = None if all_masks is None else relevance_mask(np.asarray(all_masks[selection.rows]), attribute)
    scored_rows = selection.rows[selection.scored]
    noise = np.random.default_rng(params.seed).random((len(scored_rows), *data.images.shape[1:3]), dtype=np.float32)
    reference = {f"random_{k}": v for k, v in _curve_scores(net, data, scored_rows, noise, target, params).items()}
    if masks is not None:
        reference["mask_area_fraction"] = float(np.mean(mask_area_fraction(masks[selection.mean])))
    results = []
    for name in params.methods:
        started = time.perf_counter()
        maps = attribution_maps(
            build_method(name, net, params), data.images, selection.rows, target, params.batch_size, progress
        )
        seconds = time.perf_counter() - started
        scores: dict[str, float] = {"maps_per_s": len(selection.rows) / seconds}
        scores.update(_curve_scores(net, data, scored_rows, maps[selection.scored], target, params))
        randomized_maps = attribution_maps(
            build_method(name, randomized, params), data.images, scored_rows, target, params.batch_size, progress
        )
        correlation = mean_defined(map_rank_correlation(maps[selection.scored], randomized_maps))
        scores["randomization_rank_corr"] = correlation
        scores["randomization_passed"] = (
            float(correlation < params.sanity_threshold) if np.isfinite(correlation) else np.nan
        )
        if masks is not None:
            mean_maps, mean_masks = maps[selection.mean], masks[selection.mean]
            scores["mass_accuracy"] = mean_defined(relevance_mass_accuracy(mean_maps, mean_masks))
            scores["rank_accuracy"] = mean_defined(relevance_rank_accuracy(mean_maps, mean_masks))
        results.append(MethodMaps(attribute, name, maps, scores))
    return AttributeExplanation(attribute, selection, results, reference)


def explain_study(
    net: FaceTraitsNet, data: PreparedData, attributes: Sequence[str], params: ExplainParams, show_progress: bool = True
) -> list[AttributeExplanation]:
    """Maps and scores per attribute; one re-initialized copy of the model serves every randomization check."""
    unknown = [a for a in attributes if a not in net.attributes]
    if unknown:
        raise ConfigError(f"explain.attributes: {unknown} not predicted by the model (it has {list(net.attributes)})")
    test_rows = data.indices("test")
    if len(test_rows) < 3:
        raise DataError(f"{data.root}: {len(test_rows)} test faces; explaining needs at least 3")
    predicted = predict_images(net, data.images[test_rows], params.batch_size)
    selections = {
        attribute: select_faces(test_rows, predicted[:, net.attributes.index(attribute)], params)
        for attribute in attributes
    }
    randomized = randomized_copy(net, params.randomize_blocks, params.seed)
    total = len(params.methods) * sum(len(s.rows) + len(s.scored) for s in selections.values())
    with tqdm(total=total, desc="explain", unit="map", disable=not show_progress) as progress:
        return [
            explain_attribute(net, randomized, data, attribute, selections[attribute], params, progress)
            for attribute in attributes
        ]
