"""The manifold study: maps of every face from the model's features, its predictions and human ratings, scored.

Every map is judged against the same human ratings and pair labels of the same test faces, so a number for
backbone features, one for predicted ratings and one for the ratings themselves line up: how much of what
people see in a face survives each representation.
"""

from __future__ import annotations

import dataclasses
import itertools
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from facetraits.config import ManifoldParams
from facetraits.data.prepared import FEATURES_FILE, PREDICTIONS_FILE, PreparedData, read_predictions
from facetraits.errors import ConfigError, DataError
from facetraits.figures import save_figure
from facetraits.files import atomic_directory, atomic_write_json, atomic_write_text
from facetraits.manifold.correlations import attribute_correlations, cluster_order, matrix_agreement
from facetraits.manifold.embedding import MapJob, coordinates_table, embed_maps, impute_with_means
from facetraits.manifold.figures import (
    correlation_heatmap,
    embedding_3d,
    embedding_grid,
    interactive_scatter_html,
    label_scatter,
)
from facetraits.manifold.scores import (
    antonym_pairs,
    knn_recoverability,
    map_trustworthiness,
    median_split_labels,
    pair_labels,
    silhouette_by_label,
)
from facetraits.numbers import flat_metrics, json_number
from facetraits.spreadsheet import write_csv
from facetraits.stage_result import StageResult

METRICS_FILE = "metrics.json"
COORDINATES_FILE = "coordinates.csv"
HUMAN_CORRELATIONS = "correlations_human"
MODEL_CORRELATIONS = "correlations_model"
MODEL_IN_HUMAN_ORDER = "correlations_model_human_order"
SCATTER_FILE = "scatter.html"
FIGURES_DIR = "figures"
SOURCE_TITLES = {"features": "backbone features", "predicted": "predicted ratings", "human": "human ratings"}
METHOD_TITLES = {"pca": "PCA", "tsne": "t-SNE", "umap": "UMAP"}
# The interactive page shows one map; neighbourhoods, which hovering explores, are what t-SNE and UMAP keep.
SCATTER_METHODS = ("umap", "tsne", "pca")
# Rating-based scores use only these faces: the model was fitted to the training faces' ratings.
SCORED_SPLIT = "test"
TAG_FEATURES_FROM = "facetraits.manifold.features_from"  # the train stage's features file that is mapped
# Fewer attributes give fewer than 3 attribute pairs, too few to correlate two correlation matrices.
MIN_AGREEMENT_ATTRIBUTES = 3


@dataclass(frozen=True)
class ModelVectors:
    """What the trained model makes of every face: penultimate features and predicted ratings."""

    features: np.ndarray
    predicted: pd.DataFrame
    features_from: str
    seconds: float


@dataclass(frozen=True)
class FaceMap:
    """One map of one source (every face), how faithful it is (every face) and how readable (test faces)."""

    source: str
    method: str
    dims: int
    coords: np.ndarray
    trustworthiness: float
    knn_r: pd.Series
    silhouette: pd.DataFrame
    seconds: float

    @property
    def knn_r_mean(self) -> float:
        return _mean(self.knn_r)

    @property
    def silhouette_mean(self) -> float:
        return _mean(self.silhouette["silhouette"])


@dataclass(frozen=True)
class ManifoldStudy:
    """Maps of every face; `scored_rows` are the test faces that kNN r, silhouettes and correlations use."""

    ids: np.ndarray
    human: pd.DataFrame
    predicted: pd.DataFrame
    labels: pd.DataFrame
    scored_rows: np.ndarray
    maps: tuple[FaceMap, ...]
    human_correlations: pd.DataFrame
    model_correlations: pd.DataFrame
    human_order: list[str]
    model_order: list[str]
    agreement: dict[str, Any] | None
    imputed: int
    feature_dims: int
    features_from: str
    seconds: dict[str, float]


@dataclass(frozen=True)
class ManifoldOutputs:
    metrics: dict[str, Any]
    seconds: dict[str, float]  # timings go to MLflow and the console, never to the DVC-tracked metrics.json
    flat_metrics: dict[str, float]


def model_vectors(train_dir: Path, data: PreparedData) -> ModelVectors:
    """The train stage's features of every face (its first model's, which that model's heads read) and its
    predictions, in prepared order: what a second pass of every face through the models gave, bit for bit, without
    the pass (or torch)."""
    start = time.perf_counter()
    path = Path(train_dir) / FEATURES_FILE
    try:
        features = np.load(path)
    except FileNotFoundError:
        raise DataError(f"{path}: not found; run the train stage first (dvc repro train)") from None
    if features.ndim != 2 or len(features) != len(data.faces):
        raise DataError(
            f"{path}: features of shape {features.shape} for {len(data.faces)} prepared faces; the file is stale: "
            "retrain on the prepared data (dvc repro train)"
        )
    attributes = list(data.attributes)
    predicted = read_predictions(Path(train_dir) / PREDICTIONS_FILE, data.faces["id"], attributes)
    return ModelVectors(features, pd.DataFrame(predicted, columns=attributes), str(path), time.perf_counter() - start)


def label_table(human: pd.DataFrame, pairs: str | Sequence[Sequence[str]]) -> pd.DataFrame:
    """Pair labels from human ratings: `pairs` given, or "auto" (antonyms; median splits when the set has none)."""
    if pairs == "auto":
        found = antonym_pairs(list(human.columns))
        return pair_labels(human, found) if found else median_split_labels(human, list(human.columns))
    unknown = sorted({name for pair in pairs for name in pair} - set(human.columns))
    if unknown:
        raise ConfigError(f"manifold.pairs: {unknown} not in the prepared data attributes {list(human.columns)}")
    return pair_labels(human, [(positive, negative) for positive, negative in pairs])


def manifold_study(
    model: ModelVectors,
    ids: np.ndarray,
    human: pd.DataFrame,
    train_rows: np.ndarray,
    test_rows: np.ndarray,
    params: ManifoldParams,
) -> ManifoldStudy:
    """Every map params asks for, scored against human ratings; correlations come first, as they fail fastest.

    Maps place every face, but kNN r, silhouettes, both correlation matrices and their agreement use only
    `test_rows`: the model was fitted to the training faces' ratings, so on those faces its numbers would be
    partly in-sample. Trustworthiness compares a map with its own input, no rating, and uses every face.
    Human ratings are imputed (training-face means) only to be mapped; kNN targets and labels keep their
    gaps, so a filled value is never scored as if a person had given it.
    """
    human = human.reset_index(drop=True)
    test = _scored_rows(test_rows, len(human))
    human_corr = attribute_correlations(human.iloc[test])
    human = human.astype(np.float64)
    attributes = list(human.columns)
    unpredicted = sorted(set(attributes) - set(model.predicted.columns))
    if unpredicted:
        raise DataError(f"the model's predictions lack attribute(s) {unpredicted} that humans rated")
    predicted = model.predicted[attributes].reset_index(drop=True)
    if not len(ids) == len(human) == len(model.features) == len(predicted):
        raise DataError(
            f"{len(ids)} face ids but {len(human)} human rating rows, {len(model.features)} feature rows "
            f"and {len(predicted)} prediction rows"
        )
    labels = label_table(human, params.pairs)
    # Labelled anew from the test faces alone: a median split must not move with training-face ratings.
    scored_human = human.iloc[test].reset_index(drop=True)
    scored_labels = label_table(scored_human, params.pairs)
    model_corr = attribute_correlations(predicted.iloc[test])
    agreement = (
        matrix_agreement(human_corr, model_corr, params.permutations, params.seed)
        if len(attributes) >= MIN_AGREEMENT_ATTRIBUTES
        else None
    )
    sources = {
        "features": model.features,
        "predicted": predicted.to_numpy(dtype=np.float64),
        "human": impute_with_means(human.to_numpy(), train_rows, attributes),
    }
    jobs = [
        MapJob(source, method, dims, params.seed, params.perplexity, params.n_neighbors, params.pca_first)
        for source, method, dims in itertools.product(params.sources, params.methods, params.dims)
    ]
    start = time.perf_counter()
    embedded = embed_maps(sources, jobs, params.workers)
    seconds = {"model": model.seconds, "embed": time.perf_counter() - start}
    start = time.perf_counter()
    scoring = tqdm(zip(jobs, embedded, strict=True), total=len(jobs), desc="manifold scores", unit="map")
    maps = [
        _scored_map(sources[job.source], coords, test, job.source, job.method, scored_human, scored_labels, params, s)
        for job, (coords, s) in scoring
    ]
    seconds["scores"] = time.perf_counter() - start
    return ManifoldStudy(
        ids=np.asarray(ids),
        human=human,
        predicted=predicted,
        labels=labels,
        scored_rows=test,
        maps=tuple(maps),
        human_correlations=human_corr,
        model_correlations=model_corr,
        human_order=cluster_order(human_corr),
        model_order=cluster_order(model_corr),
        agreement=agreement,
        imputed=int(human.isna().to_numpy().sum()),
        feature_dims=int(model.features.shape[1]),
        features_from=model.features_from,
        seconds=seconds,
    )


def _scored_rows(rows: np.ndarray, faces: int) -> np.ndarray:
    rows = np.asarray(rows)
    if rows.size == 0:
        raise DataError(f"the {SCORED_SPLIT} split is empty: no faces to score the maps on")
    if rows.ndim != 1 or not np.issubdtype(rows.dtype, np.integer):
        raise DataError(f"{SCORED_SPLIT} rows must be a 1-D array of face positions, got {rows.dtype} {rows.shape}")
    if rows.min() < 0 or rows.max() >= faces or len(np.unique(rows)) != len(rows):
        raise DataError(f"{SCORED_SPLIT} rows must be distinct positions among the {faces} faces")
    return rows


def _scored_map(
    values: np.ndarray,
    coords: np.ndarray,
    test: np.ndarray,
    source: str,
    method: str,
    human: pd.DataFrame,
    labels: pd.DataFrame,
    params: ManifoldParams,
    seconds: float,
) -> FaceMap:
    """Trustworthiness of every face against the map's own input; kNN r and silhouettes of the `test` faces,
    whose `human` ratings and `labels` are given.

    Trustworthiness uses the kNN neighbourhood size: both ask about the same few nearest faces.
    """
    knn = knn_recoverability(coords[test], human.to_numpy(), params.knn_neighbors, params.folds, params.seed)
    return FaceMap(
        source=source,
        method=method,
        dims=coords.shape[1],
        coords=coords,
        trustworthiness=map_trustworthiness(values, coords, params.knn_neighbors, seed=params.seed),
        knn_r=pd.Series(knn, index=human.columns),
        silhouette=silhouette_by_label(coords[test], labels, seed=params.seed),
        seconds=seconds,
    )


def metrics_summary(study: ManifoldStudy) -> dict[str, Any]:
    """Numbers for `dvc metrics show`, nested source / method / "2d"; null where a score is undefined. No timings:
    identical runs write identical bytes, so dvc.lock does not change when nothing did."""
    maps: dict[str, Any] = {}
    for face_map in study.maps:
        silhouettes = face_map.silhouette.set_index("label")["silhouette"]
        maps.setdefault(face_map.source, {}).setdefault(face_map.method, {})[f"{face_map.dims}d"] = {
            "trustworthiness": json_number(face_map.trustworthiness),
            "knn_r_mean": json_number(face_map.knn_r_mean),
            "knn_r": {str(name): json_number(r) for name, r in face_map.knn_r.items()},
            "silhouette_mean": json_number(face_map.silhouette_mean),
            "silhouette": {str(label): json_number(score) for label, score in silhouettes.items()},
        }
    return {
        "faces": len(study.ids),
        "scored_split": SCORED_SPLIT,
        "scored_faces": len(study.scored_rows),
        "human_values_imputed": study.imputed,
        "feature_dims": study.feature_dims,
        "features_from": study.features_from,
        "agreement": None if study.agreement is None else {k: json_number(v) for k, v in study.agreement.items()},
        "maps": maps,
    }


def write_manifold_outputs(study: ManifoldStudy, out_dir: Path) -> ManifoldOutputs:
    """metrics.json, coordinates, correlation tables, figures and the HTML page, replacing `out_dir` all at once."""
    with atomic_directory(out_dir) as folder:
        start = time.perf_counter()
        (folder / FIGURES_DIR).mkdir()
        _write_map_figures(study, folder / FIGURES_DIR)
        _write_correlations(study, folder)
        shown = _scatter_map(study.maps)
        if shown is not None:
            atomic_write_text(folder / SCATTER_FILE, _scatter_page(study, shown))
        figure_seconds = time.perf_counter() - start
        write_csv(
            pd.concat([coordinates_table(study.ids, m.coords, m.source, m.method) for m in study.maps], ignore_index=True),
            folder / COORDINATES_FILE,
            index=False,
            float_format="%.6g",
        )
        metrics = metrics_summary(study)
        atomic_write_json(folder / METRICS_FILE, metrics)
    seconds = {**study.seconds, "figures": figure_seconds}
    return ManifoldOutputs(metrics, seconds, flat_metrics(run_metrics(metrics, study.maps, seconds), "manifold"))


def run_metrics(metrics: dict[str, Any], maps: Sequence[FaceMap], seconds: dict[str, float]) -> dict[str, Any]:
    """What MLflow charts: each map's summary scores and seconds, the stage's timings; per-attribute and
    per-label values stay in metrics.json."""
    per_map = ("trustworthiness", "knn_r_mean", "silhouette_mean")
    charted = {
        source: {method: {dims: {k: scores[k] for k in per_map} for dims, scores in by_dims.items()}
                 for method, by_dims in methods.items()}
        for source, methods in metrics["maps"].items()
    }  # fmt: skip
    for face_map in maps:
        charted[face_map.source][face_map.method][f"{face_map.dims}d"]["seconds"] = json_number(face_map.seconds)
    return {**metrics, "maps": charted, "seconds": {part: json_number(value) for part, value in seconds.items()}}


def _write_map_figures(study: ManifoldStudy, folder: Path) -> None:
    """2-D maps coloured by every attribute and by pair label; 3-D maps by the first attribute only (one view)."""
    first = str(study.human.columns[0])
    for face_map in study.maps:
        stem = f"{face_map.source}_{face_map.method}"
        title = (
            f"{SOURCE_TITLES[face_map.source]}, {METHOD_TITLES[face_map.method]} {face_map.dims}-D "
            f"(trustworthiness {face_map.trustworthiness:.2f})"
        )
        if face_map.dims == 3:
            figure = embedding_3d(face_map.coords, study.human[first].to_numpy(), f"{title}: human {first} rating")
            save_figure(figure, folder / f"{stem}_3d.png")
            continue
        knn = face_map.knn_r_mean
        grid = embedding_grid(face_map.coords, study.human, f"{title}, mean test kNN r {knn:.2f}: human ratings")
        save_figure(grid, folder / f"{stem}_2d.png")
        silhouette = face_map.silhouette_mean
        scatter = label_scatter(face_map.coords, study.labels, f"{title}, mean test silhouette {silhouette:.2f}")
        save_figure(scatter, folder / f"{stem}_labels.png")


def _write_correlations(study: ManifoldStudy, folder: Path) -> None:
    """Each matrix in its own cluster order (CSV and heatmap), and the model's again in the human order.

    In the human order the same cell is the same attribute pair in both heatmaps, so the model's departures
    from human structure show as broken blocks; in its own order, the blocks the model does form show.
    """
    agreement = study.agreement
    versus = (
        f"; vs human r = {agreement['pearson']:.2f} (Mantel p = {agreement['mantel_p']:.3f})"
        if agreement is not None
        else ""
    )
    faces = f"attribute correlations over {len(study.scored_rows)} {SCORED_SPLIT} faces"
    for stem, corr, order, title in (
        (HUMAN_CORRELATIONS, study.human_correlations, study.human_order, f"human ratings: {faces}, clustered"),
        (MODEL_CORRELATIONS, study.model_correlations, study.model_order, f"predicted: {faces}, clustered{versus}"),
        (MODEL_IN_HUMAN_ORDER, study.model_correlations, study.human_order, f"predicted, in human order{versus}"),
    ):
        write_csv(corr.loc[order, order], folder / f"{stem}.csv", float_format="%.6g")
        save_figure(correlation_heatmap(corr, order, title), folder / FIGURES_DIR / f"{stem}.png")


def _scatter_map(maps: Sequence[FaceMap]) -> FaceMap | None:
    """The first source's 2-D map by the first of SCATTER_METHODS it has; None without 2-D maps."""
    flat = [face_map for face_map in maps if face_map.dims == 2]
    if not flat:
        return None
    candidates = [face_map for face_map in flat if face_map.source == flat[0].source]
    return min(candidates, key=lambda face_map: SCATTER_METHODS.index(face_map.method))


def _scatter_page(study: ManifoldStudy, shown: FaceMap) -> str:
    colours = pd.concat([study.human, study.predicted.add_prefix("predicted ")], axis=1)
    title = f"{SOURCE_TITLES[shown.source]}, {METHOD_TITLES[shown.method]} 2-D map of {len(study.ids)} faces"
    return interactive_scatter_html(shown.coords, study.ids, colours, title)


def _mean(values: pd.Series | np.ndarray) -> float:
    finite = np.asarray(values, dtype=np.float64)
    finite = finite[np.isfinite(finite)]
    return float(finite.mean()) if len(finite) else float("nan")


def best_model_map(maps: Sequence[FaceMap]) -> FaceMap:
    """The map of the model's features or predictions whose neighbours best recover the human ratings (a map of
    human ratings recovering human ratings is the reference, not a finding; it counts only when alone)."""
    model_maps = [face_map for face_map in maps if face_map.source != "human"] or list(maps)
    return max(model_maps, key=lambda face_map: np.nan_to_num(face_map.knn_r_mean, nan=-1.0))


def mapped_rows(faces: int, test_rows: np.ndarray, max_faces: int | None, seed: int) -> np.ndarray:
    """The faces the maps place, sorted: all of them, or beyond `max_faces` every test face (the scores' faces)
    and a seeded sample of the others up to `max_faces`. t-SNE's and UMAP's cost grows faster than the faces
    (4,000 to 10,000 faces: x4.3), and a map of a few thousand faces shows the same structure."""
    if max_faces is None or faces <= max_faces:
        return np.arange(faces)
    others = np.setdiff1d(np.arange(faces), test_rows)
    size = min(max(max_faces - len(test_rows), 0), len(others))
    return np.sort(np.concatenate([test_rows, np.random.default_rng(seed).choice(others, size, replace=False)]))


def manifold_stage(data: PreparedData, params: ManifoldParams, train_dir: Path, out_dir: Path) -> StageResult:
    """The manifold stage: every face (up to manifold.max_faces: mapped_rows) mapped from the train stage's
    features and predictions (`train_dir`) and from human ratings, scored and drawn."""
    model = model_vectors(train_dir, data)
    rows = mapped_rows(len(data.faces), data.indices(SCORED_SPLIT), params.max_faces, params.seed)
    model = dataclasses.replace(model, features=model.features[rows], predicted=model.predicted.iloc[rows].reset_index(drop=True))
    faces = data.faces.iloc[rows].reset_index(drop=True)
    human, ids = faces[list(data.attributes)], faces["id"].to_numpy()
    train, test = (np.flatnonzero(faces["split"].to_numpy() == split) for split in ("train", SCORED_SPLIT))
    study = manifold_study(model, ids, human, train, test, params)
    outputs = write_manifold_outputs(study, out_dir)
    best = best_model_map(study.maps)
    agreement = "" if study.agreement is None else f"; human vs model correlations r {study.agreement['pearson']:.2f}"
    seconds = sum(outputs.seconds.values())
    summary = (
        f"manifold: {len(study.maps)} maps of {len(study.ids)} of {len(data.faces)} faces, features from {study.features_from}; "
        f"scored on {len(study.scored_rows)} {SCORED_SPLIT} faces: best mean kNN r {best.knn_r_mean:.2f} "
        f"({best.source} {best.method} {best.dims}-D){agreement}; {seconds:.0f} s"
    )
    tags = {TAG_FEATURES_FROM: study.features_from}
    return StageResult(summary, outputs.flat_metrics, [(out_dir, "manifold")], tags)
