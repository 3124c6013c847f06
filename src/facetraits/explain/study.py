"""Every attribute x method of a trained model: mean maps streamed over test faces, kept maps of a few, and scores."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

from facetraits.batching import batches
from facetraits.config import ExplainParams
from facetraits.data.prepared import PreparedData
from facetraits.errors import ConfigError, DataError
from facetraits.explain.maps import RunningMean, attribution_maps, image_batch, map_batches, unit_sum
from facetraits.explain.methods import build_method
from facetraits.explain.methods.base import baseline_images
from facetraits.explain.methods.region_occlusion import RegionReader
from facetraits.explain.regions import REGIONS
from facetraits.explain.scores.faithfulness import PerturbationCurves, curve_ends, perturbation_curves
from facetraits.explain.scores.ground_truth import mask_area_fraction, relevance_mass_accuracy, relevance_rank_accuracy
from facetraits.explain.scores.sanity import map_rank_correlation, maps_changed, randomized_copy
from facetraits.explain.scores.spread import mean_interval, randomization_p
from facetraits.models.components.net import FaceTraitsNet
from facetraits.models.inference import predict_images

MaskReader = Callable[[np.ndarray], np.ndarray]  # rows -> (len(rows), H, W) bool masks of one attribute
REGION_PREFIX = "region_"  # the scores against the top occlusion region: region_mass_accuracy, region_rank_accuracy


@dataclass(frozen=True)
class FaceSelection:
    """Test faces to explain, as rows into the prepared data.

    Maps are kept only for `rows` (gallery and scored faces); the mean map and the ground-truth scores
    stream over `mean_rows`, which can be the whole test split.
    """

    rows: np.ndarray  # faces whose maps are kept, in row order
    predicted: np.ndarray  # at rows
    gallery: np.ndarray  # positions into rows, ordered highest, lowest, random
    gallery_roles: tuple[str, ...]
    scored: np.ndarray  # positions into rows for deletion/insertion and the randomization check
    mean_rows: np.ndarray  # faces averaged into the mean map and scored against ground truth, in row order

    @property
    def mapped(self) -> np.ndarray:
        """Every face a method maps: the mean faces and the kept ones, in row order."""
        return np.union1d(self.mean_rows, self.rows)


def _mean_positions(rng: np.random.Generator, count: int, mean_faces: int | None) -> np.ndarray:
    return np.arange(count) if mean_faces is None else np.sort(rng.permutation(count)[:mean_faces])


def mean_rows(test_rows: np.ndarray, params: ExplainParams) -> np.ndarray:
    """The seeded mean sample of `select_faces`, for a model explained by region occlusion alone (a variant)."""
    return test_rows[_mean_positions(np.random.default_rng(params.seed), len(test_rows), params.mean_faces)]


def select_faces(test_rows: np.ndarray, predicted: np.ndarray, params: ExplainParams) -> FaceSelection:
    """Extremes show what drives high and low impressions; a seeded random sample shows the typical face.

    The mean sample and the scored faces are drawn first, from the seed and the number of test faces
    only, so every attribute is averaged and scored over the same faces.
    """
    rng = np.random.default_rng(params.seed)
    count = len(test_rows)
    mean = _mean_positions(rng, count, params.mean_faces)
    scored = np.sort(rng.choice(mean, size=min(params.score_faces, len(mean)), replace=False))
    order = np.argsort(-predicted, kind="stable")
    k = min(params.gallery_faces, count // 3)
    highest, lowest = order[:k], order[::-1][:k]
    rest = np.setdiff1d(np.arange(count), np.concatenate([highest, lowest]))
    random = np.sort(rng.choice(rest, size=min(k, len(rest)), replace=False))
    kept = np.unique(np.concatenate([highest, lowest, random, scored]))
    gallery = np.searchsorted(kept, np.concatenate([highest, lowest, random]))
    roles = ("highest",) * len(highest) + ("lowest",) * len(lowest) + ("random",) * len(random)
    return FaceSelection(
        rows=test_rows[kept], predicted=predicted[kept], gallery=gallery, gallery_roles=roles,
        scored=np.searchsorted(kept, scored), mean_rows=test_rows[mean],
    )  # fmt: skip


@dataclass
class MethodMaps:
    """One method's maps of one attribute, with its scores."""

    attribute: str
    method: str
    maps: np.ndarray  # (len(selection.rows), H, W): the kept faces
    mean_map: np.ndarray  # (H, W): mean of unit-sum maps over selection.mean_rows
    maps_per_s: float  # MLflow only: a timing in the DVC metrics would differ on every run
    scores: dict[str, float] = field(default_factory=dict)
    face_scores: dict[str, np.ndarray] = field(default_factory=dict)  # per face, NaN where undefined: intervals


@dataclass
class AttributeExplanation:
    attribute: str
    selection: FaceSelection
    methods: list[MethodMaps]
    reference_scores: dict[str, float]  # what a random ordering of pixels scores on the same faces
    # the face region whose occlusion moved the model's prediction most (region importance), against which the
    # region_ scores measure each map, as the generator's regions are for synthetic faces; None without one
    top_region: str | None = None


def mean_defined(values: np.ndarray) -> float:
    """Mean over faces where the score is defined; NaN (written as null) when it is defined for none, e.g. all-zero maps."""
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if len(finite) else float("nan")


def _curve_scores(
    net: FaceTraitsNet, data: PreparedData, rows: np.ndarray, maps: np.ndarray, targets: Sequence[int],
    params: ExplainParams, precision: str, ends: np.ndarray | None = None,
) -> list[PerturbationCurves]:  # fmt: skip
    """Deletion / insertion over `rows`, `batch_size` faces at a time, for each of `targets`; `ends`: the faces'
    `scored_ends` (predicted here when not given)."""
    device = next(net.parameters()).device
    parts = []
    for part in batches(len(rows), params.batch_size):
        chunk = rows[part]
        images = image_batch(data.images, chunk, device)
        parts.append(perturbation_curves(
            net, images, torch.from_numpy(maps[part]).to(device),
            baseline_images(images, params.baseline, params.blur_sigma), targets, params.curve_steps,
            params.batch_size, chunk.tolist(), params.seed, precision, ends=None if ends is None else ends[part],
        ))  # fmt: skip
    return [PerturbationCurves.concatenate(per_target) for per_target in zip(*parts, strict=True)]


def scored_ends(
    net: FaceTraitsNet, data: PreparedData, rows: np.ndarray, params: ExplainParams, precision: str
) -> np.ndarray:
    """(len(rows), 2, outputs) predictions of each scored face and of its reference: the ends of its curves for
    every method and attribute (all score the same faces), predicted once."""
    device = next(net.parameters()).device
    parts = [np.zeros((0, 2, len(net.attributes)))]
    for part in batches(len(rows), params.batch_size):
        images = image_batch(data.images, rows[part], device)
        references = baseline_images(images, params.baseline, params.blur_sigma)
        parts.append(curve_ends(net, images, references, params.batch_size, precision))
    return np.concatenate(parts)


def _auc_scores(curves: PerturbationCurves) -> dict[str, float]:
    aucs = {"deletion_auc": curves.deletion_auc(), "insertion_auc": curves.insertion_auc()}
    return {**aucs, "curve_faces": float(curves.used)}


def random_order_scores(
    net: FaceTraitsNet, data: PreparedData, scored_rows: np.ndarray, attributes: Sequence[str], params: ExplainParams,
    precision: str = "32-true", ends: np.ndarray | None = None,
) -> dict[str, dict[str, float]]:
    """What a random ordering of pixels scores on the scored faces, per attribute.

    The scored faces and the seeded noise maps are the same for every attribute, so one set of forward
    passes gives every attribute's reference curves.
    """
    noise = np.random.default_rng(params.seed).random((len(scored_rows), *data.images.shape[1:3]), dtype=np.float32)
    targets = [net.attributes.index(attribute) for attribute in attributes]
    curves = _curve_scores(net, data, scored_rows, noise, targets, params, precision, ends)
    return {a: {f"random_{k}": v for k, v in _auc_scores(c).items()} for a, c in zip(attributes, curves, strict=True)}


def _explain_method(
    name: str,
    net: FaceTraitsNet,
    randomized: FaceTraitsNet,
    data: PreparedData,
    attribute: str,
    selection: FaceSelection,
    masks: dict[str, MaskReader],
    params: ExplainParams,
    progress: tqdm | None,
    precision: str,
    regions: RegionReader | None,
    ends: np.ndarray | None,
) -> MethodMaps:
    """One pass over the mapped faces: the mean map and the accuracies against each of `masks` (score prefix ->
    reader) accumulate, kept maps are stored."""
    target = net.attributes.index(attribute)
    kept = np.zeros((len(selection.rows), *data.images.shape[1:3]), dtype=np.float32)
    mean_map = RunningMean()
    mass: dict[str, list[np.ndarray]] = {prefix: [] for prefix in masks}
    rank = {prefix: RunningMean() for prefix in masks}
    method, mapped = build_method(name, net, params, regions, precision), selection.mapped
    started = time.perf_counter()
    for rows, maps in map_batches(method, data.images, mapped, target, params.batch_size, progress):
        keep = np.isin(rows, selection.rows)
        kept[np.searchsorted(selection.rows, rows[keep])] = maps[keep]
        averaged = np.isin(rows, selection.mean_rows)
        mean_map.add(unit_sum(maps[averaged]))
        for prefix, reader in masks.items():
            truth = reader(rows[averaged])
            mass[prefix].append(relevance_mass_accuracy(maps[averaged], truth))
            rank[prefix].add(relevance_rank_accuracy(maps[averaged], truth))
    maps_per_s = len(mapped) / (time.perf_counter() - started)
    scored_rows, scored_maps = selection.rows[selection.scored], kept[selection.scored]
    (curves,) = _curve_scores(net, data, scored_rows, scored_maps, [target], params, precision, ends)
    scores, face_scores = _auc_scores(curves), curves.face_aucs()
    randomized_maps = attribution_maps(
        build_method(name, randomized, params, regions, precision), data.images, scored_rows, target, params.batch_size,
        progress,
    )
    face_scores["randomization_rank_corr"] = map_rank_correlation(scored_maps, randomized_maps)
    scores["randomization_rank_corr"] = mean_defined(face_scores["randomization_rank_corr"])
    scores["randomization_passed"] = mean_defined(maps_changed(scored_maps, randomized_maps, params.sanity_threshold))
    scores["randomization_p"] = randomization_p(face_scores["randomization_rank_corr"], params.sanity_threshold)
    for prefix in masks:
        face_scores[f"{prefix}mass_accuracy"] = np.concatenate(mass[prefix]) if mass[prefix] else np.array([])
        scores[f"{prefix}mass_accuracy"] = mean_defined(face_scores[f"{prefix}mass_accuracy"])
        scores[f"{prefix}rank_accuracy"] = float(rank[prefix].mean())
    for key, values in face_scores.items():
        scores[f"{key}_ci_low"], scores[f"{key}_ci_high"] = mean_interval(
            [values], params.confidence, params.bootstrap_resamples, params.seed
        )
    return MethodMaps(attribute, name, kept, np.asarray(mean_map.mean()), maps_per_s, scores, face_scores)


def explain_attribute(
    net: FaceTraitsNet,
    randomized: FaceTraitsNet,
    data: PreparedData,
    attribute: str,
    selection: FaceSelection,
    params: ExplainParams,
    random_order: dict[str, float],
    progress: tqdm | None = None,
    precision: str = "32-true",
    regions: RegionReader | None = None,
    ends: np.ndarray | None = None,
    top_region: str | None = None,
) -> AttributeExplanation:
    """`random_order`: this attribute's entry of `random_order_scores` on `selection`'s scored faces; `precision`:
    the forward passes' without gradients (deletion / insertion), as in `inference_precision`; `regions`: the
    faces' region labels by row (for region occlusion); `ends`: the scored faces' `scored_ends`, when known;
    `top_region`: the region of `regions` the maps are also scored against (region_mass_accuracy, ...)."""
    masks: dict[str, MaskReader] = {}
    generator_masks = data.relevance_masks(attribute)
    if generator_masks is not None:
        masks[""] = generator_masks
    if top_region is not None and regions is not None:
        label = REGIONS.index(top_region)
        masks[REGION_PREFIX] = lambda rows: regions(rows) == label
    reference = dict(random_order)
    for prefix, reader in masks.items():
        area = RunningMean()
        for part in batches(len(selection.mean_rows), params.batch_size):
            area.add(mask_area_fraction(reader(selection.mean_rows[part])))
        reference[f"{prefix}mask_area_fraction"] = float(area.mean())
    results = [
        _explain_method(
            name, net, randomized, data, attribute, selection, masks, params, progress, precision, regions, ends
        )
        for name in params.methods
    ]
    return AttributeExplanation(attribute, selection, results, reference, top_region)


def _test_predictions(net: FaceTraitsNet, data: PreparedData, rows: np.ndarray, batch_size: int, precision: str) -> np.ndarray:
    """(len(rows), A) predicted ratings, read from the memory map one batch at a time."""
    return np.concatenate([
        predict_images(net, data.images[rows[part]], batch_size, precision) for part in batches(len(rows), batch_size)
    ])  # fmt: skip


def explain_study(
    net: FaceTraitsNet, data: PreparedData, attributes: Sequence[str], params: ExplainParams, show_progress: bool = True,
    precision: str = "32-true", regions: RegionReader | None = None, top_regions: Mapping[str, str] | None = None,
) -> list[AttributeExplanation]:
    """Maps and scores per attribute; one re-initialized copy of the model serves every randomization check.
    Predictions and deletion / insertion curves run in `precision` (the study's, resolved); maps in fp32;
    `regions`: the faces' region labels by row, for region occlusion; `top_regions`: per attribute, the region
    each map's relevance is also measured in (the one whose occlusion moves the prediction most)."""
    unknown = [a for a in attributes if a not in net.attributes]
    if unknown:
        raise ConfigError(f"explain.attributes: {unknown} not predicted by the model (it has {list(net.attributes)})")
    test_rows = data.indices("test")
    if len(test_rows) < 3:
        raise DataError(f"{data.root}: {len(test_rows)} test faces; explaining needs at least 3")
    predicted = _test_predictions(net, data, test_rows, params.batch_size, precision)
    selections = {
        attribute: select_faces(test_rows, predicted[:, net.attributes.index(attribute)], params)
        for attribute in attributes
    }
    randomized = randomized_copy(net, params.randomize_blocks, params.seed)
    any_selection = next(iter(selections.values()))  # every attribute scores the same faces
    scored_rows = any_selection.rows[any_selection.scored]
    ends = scored_ends(net, data, scored_rows, params, precision)
    random_order = random_order_scores(net, data, scored_rows, attributes, params, precision, ends)
    total = len(params.methods) * sum(len(s.mapped) + len(s.scored) for s in selections.values())
    with tqdm(total=total, desc="explain", unit="map", disable=not show_progress) as progress:
        return [
            explain_attribute(
                net, randomized, data, attribute, selections[attribute], params, random_order[attribute], progress,
                precision, regions, ends, (top_regions or {}).get(attribute),
            )
            for attribute in attributes
        ]
