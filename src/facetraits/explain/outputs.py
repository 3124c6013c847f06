"""What the explain stage leaves behind: scores.json, galleries, mean maps and the raw maps, under one folder."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from facetraits.batching import batches
from facetraits.config import ExplainParams
from facetraits.data.prepared import PreparedData
from facetraits.errors import ConfigError
from facetraits.explain.figures import heatmap_gallery, mean_heatmap_grid, region_importance_grid
from facetraits.explain.maps import RunningMean
from facetraits.explain.region_importance import (
    FIGURE_FILE,
    TABLE_FILE,
    RegionImportance,
    region_importance,
    region_table,
)
from facetraits.explain.regions import REGIONS, FaceRegions, typical_layout
from facetraits.explain.scores.spread import mean_interval, randomization_p
from facetraits.explain.study import AttributeExplanation, explain_study, mean_defined, mean_rows
from facetraits.figures import save_figure
from facetraits.files import atomic_directory, atomic_write_json
from facetraits.models.inference import device_for, load_net, trained_checkpoints
from facetraits.numbers import flat_metrics, json_number
from facetraits.spreadsheet import write_csv
from facetraits.stage_result import StageResult

SCORES_FILE = "scores.json"
MEAN_GRID_FILE = "mean_heatmaps.png"
MEAN_FACE_BATCH = 256  # faces read at a time for the mean face


@dataclass(frozen=True)
class ExplainOutputs:
    scores: dict[str, Any]  # what scores.json holds: no timings, so `dvc metrics diff` shows only real changes
    flat_metrics: dict[str, float]  # the scores plus maps per second, for MLflow
    maps_per_s: dict[str, float]  # per method, mean over attributes
    regions: pd.DataFrame | None = None  # region_importance.csv, when written


def scores_summary(explanations: Sequence[AttributeExplanation], params: ExplainParams) -> dict[str, Any]:
    """Per attribute and method, plus each method's mean over attributes (what `dvc metrics show` compares), each
    mean with its bootstrap interval over the scored faces and the randomization test over every scored face."""
    attributes: dict[str, Any] = {}
    by_method: dict[str, dict[str, list[float]]] = {}
    faces: dict[str, dict[str, list[np.ndarray]]] = {}
    for explanation in explanations:
        entry: dict[str, Any] = {"reference": {k: json_number(v) for k, v in explanation.reference_scores.items()}}
        if explanation.top_region is not None:
            entry["top_region"] = explanation.top_region
        for result in explanation.methods:
            entry[result.method] = {k: json_number(v) for k, v in result.scores.items()}
            for key, values in result.face_scores.items():
                faces.setdefault(result.method, {}).setdefault(key, []).append(values)
            for key, value in result.scores.items():
                if key in result.face_scores or key in ("curve_faces", "rank_accuracy", "region_rank_accuracy", "randomization_passed"):
                    by_method.setdefault(result.method, {}).setdefault(key, []).append(value)
        attributes[explanation.attribute] = entry
    means = {
        method: {key: json_number(mean_defined(np.asarray(values))) for key, values in scores.items()}
        for method, scores in by_method.items()
    }  # fmt: skip
    for method, per_key in faces.items():
        for key, groups in per_key.items():
            low, high = mean_interval(groups, params.confidence, params.bootstrap_resamples, params.seed)
            means[method] |= {f"{key}_ci_low": json_number(low), f"{key}_ci_high": json_number(high)}
        pooled = np.concatenate(per_key["randomization_rank_corr"])
        means[method]["randomization_p"] = json_number(randomization_p(pooled, params.sanity_threshold))
    return {"mean": means, "attributes": attributes}


def maps_per_second(explanations: Sequence[AttributeExplanation]) -> dict[str, float]:
    rates: dict[str, list[float]] = {}
    for explanation in explanations:
        for result in explanation.methods:
            rates.setdefault(result.method, []).append(result.maps_per_s)
    return {method: float(np.mean(values)) for method, values in rates.items()}


def explain_metrics(summary: dict[str, Any], explanations: Sequence[AttributeExplanation]) -> dict[str, float]:
    """Each method's scores (mean over attributes) and maps per second, for MLflow: a few dozen charts; the
    per-attribute values are in the run's scores.json rather than hundreds of one-point charts."""
    tree: dict[str, dict[str, Any]] = {method: dict(scores) for method, scores in summary["mean"].items()}
    for method, rate in maps_per_second(explanations).items():
        tree.setdefault(method, {})["maps_per_s"] = rate
    return flat_metrics(tree, "explain")


def mean_face(images: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """uint8 mean of the faces at `rows`, read from the memory map a batch at a time."""
    total = RunningMean()
    for part in batches(len(rows), MEAN_FACE_BATCH):
        total.add(np.asarray(images[rows[part]]))
    return np.asarray(total.mean()).round().astype(np.uint8)


def _faces_table(data: PreparedData, explanation: AttributeExplanation) -> pd.DataFrame:
    selection = explanation.selection
    role = np.full(len(selection.rows), "", dtype=object)
    role[selection.gallery] = selection.gallery_roles
    scored = np.zeros(len(selection.rows), dtype=bool)
    scored[selection.scored] = True
    return pd.DataFrame(
        {
            "map_index": np.arange(len(selection.rows)),
            "row": selection.rows,
            "id": data.faces["id"].to_numpy()[selection.rows],
            "predicted": selection.predicted,
            "gallery": role,
            "in_mean": np.isin(selection.rows, selection.mean_rows),
            "scored": scored,
        }
    )


def write_region_importance(
    importances: Sequence[RegionImportance], regions: FaceRegions, params: ExplainParams, folder: Path
) -> pd.DataFrame:
    """The table (every model, attribute and region) and its figure: the typical face's regions coloured by
    importance."""
    table = region_table(importances, regions, params)
    write_csv(table, folder / TABLE_FILE, index=False, float_format="%.6g")
    by_model: dict[str, dict[str, np.ndarray]] = {}
    for (model, attribute), rows in table.groupby(["model", "attribute"], sort=False):
        importance = rows.set_index("region")["importance"].reindex(REGIONS).to_numpy()
        by_model.setdefault(str(model), {})[str(attribute)] = importance
    faces = importances[0].rows
    title = (
        f"Mean drop of the prediction when a region is occluded ({params.baseline}), over {len(faces)} test faces; "
        f"regions from the {regions.source}"
    )
    save_figure(region_importance_grid(typical_layout(regions(faces)), REGIONS, by_model, title), folder / FIGURE_FILE)
    return table


def write_explain_outputs(
    data: PreparedData, explanations: Sequence[AttributeExplanation], out_dir: Path, params: ExplainParams,
    importances: Sequence[RegionImportance] = (), regions: FaceRegions | None = None,
) -> ExplainOutputs:  # fmt: skip
    """Swapped in as a whole: a failed run leaves the previous results/explain untouched.

    maps.npy holds the kept faces' maps (gallery and scored, rows as in faces.csv); the mean maps are
    drawn over the mean face of the test split; `importances` (with the `regions` they were drawn on) become
    region_importance.csv and .png.
    """
    summary = scores_summary(explanations, params)
    test_rows = data.indices("test")
    background = mean_face(data.images, test_rows)
    means: dict[str, dict[str, np.ndarray]] = {}
    with atomic_directory(Path(out_dir)) as tmp:
        atomic_write_json(tmp / SCORES_FILE, summary)
        for explanation in explanations:
            folder = tmp / explanation.attribute
            selection = explanation.selection
            faces = np.asarray(data.images[selection.rows])
            folder.mkdir(parents=True)
            write_csv(_faces_table(data, explanation), folder / "faces.csv", index=False)
            captions = [f"{p:.2f}" for p in selection.predicted[selection.gallery]]
            for result in explanation.methods:
                method_folder = folder / result.method
                method_folder.mkdir()
                np.save(method_folder / "maps.npy", result.maps)
                title = f"{explanation.attribute}: {result.method.replace('_', ' ')} (caption: predicted rating)"
                figure = heatmap_gallery(
                    faces[selection.gallery], result.maps[selection.gallery], selection.gallery_roles, captions, title
                )
                save_figure(figure, method_folder / "gallery.png")
                means.setdefault(explanation.attribute, {})[result.method] = result.mean_map
            count = len(selection.mean_rows)
            save_figure(
                mean_heatmap_grid(background, {explanation.attribute: means[explanation.attribute]},
                                  f"{explanation.attribute}: mean map over {count} of {len(test_rows)} test faces"),
                folder / "mean.png",
            )  # fmt: skip
        if means:
            save_figure(
                mean_heatmap_grid(background, means, "Mean attribution maps over test faces"), tmp / MEAN_GRID_FILE
            )
        table = None
        if importances and regions is not None:
            table = write_region_importance(importances, regions, params, tmp)
    return ExplainOutputs(summary, explain_metrics(summary, explanations), maps_per_second(explanations), table)


def _region_variant_checkpoints(
    names: Sequence[str], known: Sequence[str], variants_dir: Path, params_file: Path
) -> list[tuple[str, Path]]:
    unknown = sorted(set(names) - set(known))
    if unknown:
        raise ConfigError(
            f"{params_file}: explain.region_variants: {unknown} are not variants (variants: {list(known)})"
        )
    return [(name, path) for name in names for path in trained_checkpoints(Path(variants_dir) / name / "models")]


def explain_stage(
    data: PreparedData, params: ExplainParams, accelerator: str, precision: str, models_dir: Path, out_dir: Path,
    params_file: Path, variants_dir: Path = Path("variants"), variant_names: Sequence[str] = (),
) -> StageResult:  # fmt: skip
    """The explain stage: every wanted attribute explained with the checkpoint that predicts it (one shared
    model, or one per attribute), written under out_dir; `precision`: the models' (resolved), for forward passes.
    With explain.region_importance, region occlusion of the mean faces by the main model and each of
    explain.region_variants (trained under variants_dir; `variant_names`: params.yaml's variants)."""
    wanted = data.attributes if params.attributes == "all" else tuple(params.attributes)
    unknown = sorted(set(wanted) - set(data.attributes))
    if unknown:
        raise ConfigError(f"explain.attributes: {unknown} not in the prepared data ({list(data.attributes)})")
    variants = _region_variant_checkpoints(params.region_variants, variant_names, variants_dir, params_file)
    regions, sample = FaceRegions(data), mean_rows(data.indices("test"), params)
    explanations: list[AttributeExplanation] = []
    importances: list[RegionImportance] = []
    for model, checkpoint in [("main", path) for path in trained_checkpoints(models_dir)] + variants:
        net = load_net(checkpoint, device_for(accelerator))
        predicted = [a for a in wanted if a in net.attributes]
        found = []
        if predicted and params.region_importance:
            found = region_importance(net, data, sample, predicted, regions, params, model, precision=precision)
            importances += found
        if predicted and model == "main":
            top = {f.attribute: top_region(f) for f in found}
            explanations += explain_study(net, data, predicted, params, precision=precision, regions=regions, top_regions=top)
    if not explanations:
        raise ConfigError(
            f"{params_file}: explain.attributes: no checkpoint under {models_dir} predicts any of {list(wanted)}"
        )
    outputs = write_explain_outputs(data, explanations, out_dir, params, importances, regions)
    artifacts = [  # the maps as .npy stay in the DVC output: MLflow's UI cannot show them
        (path, f"explain/{path.parent.relative_to(out_dir).as_posix()}")
        for e in explanations
        for path in sorted((out_dir / e.attribute).rglob("*"))
        if path.is_file() and path.suffix != ".npy"
    ]
    artifacts += [(out_dir / SCORES_FILE, "explain"), (out_dir / MEAN_GRID_FILE, "explain")]
    if importances:
        artifacts += [(out_dir / TABLE_FILE, "explain"), (out_dir / FIGURE_FILE, "explain")]
    lines = [
        f"{method:>22}: {outputs.maps_per_s[method]:.1f} maps/s, deletion AUC {scores['deletion_auc']}, "
        f"insertion AUC {scores['insertion_auc']}, randomization rank r {scores['randomization_rank_corr']}"
        + (f", mass accuracy {scores['mass_accuracy']}" if "mass_accuracy" in scores else "")
        for method, scores in outputs.scores["mean"].items()
    ]
    if outputs.regions is not None:
        lines += region_lines(outputs.regions)
    return StageResult("\n".join(lines), outputs.flat_metrics, artifacts)


def top_region(found: RegionImportance) -> str:
    """The face region (background aside) whose occlusion moves the prediction most, in mean |drop| over faces."""
    importance = np.nanmean(np.abs(found.drops), axis=0)
    face = [index for index, region in enumerate(REGIONS) if region != "background"]
    return REGIONS[face[int(np.nanargmax(importance[face]))]]


def region_lines(table: pd.DataFrame) -> list[str]:
    """Per model and attribute, its three most important face regions (background aside)."""
    face = table[table["region"] != "background"]
    return [
        f"regions {model}, {attribute}: "
        + ", ".join(f"{r.region} {r.importance:.2f}" for r in rows.nlargest(3, "importance").itertuples())
        for (model, attribute), rows in face.groupby(["model", "attribute"], sort=False)
    ]
