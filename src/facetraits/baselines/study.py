"""The two reference points every model score is read against: how consistent humans are, and low-level features."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from facetraits.baselines.handcrafted import SvrBaselineResult, fit_svr_baseline, handcrafted_features
from facetraits.baselines.reliability import (
    SPLIT_HALVES_FILE,
    SplitHalves,
    reliability_table,
    split_halves,
    write_split_halves,
)
from facetraits.config import BaselinesParams
from facetraits.data.prepared import PreparedData, predictions_table
from facetraits.files import atomic_directory, atomic_write_json
from facetraits.models.metrics import shown_score, split_metrics
from facetraits.numbers import flat_metrics, json_number
from facetraits.spreadsheet import write_csv
from facetraits.stage_result import StageResult

NO_RAW_RATINGS = "the data source has no per-rater ratings, so human split-half reliability cannot be estimated"


@dataclass(frozen=True)
class BaselineResults:
    reliability: pd.DataFrame | None  # indexed by attribute: reliability, ceiling, faces, ratings_per_face
    handcrafted: SvrBaselineResult
    halves: SplitHalves | None  # what the reliability was computed from, for the report's resampled ceiling
    seconds: dict[str, float]


def run_baselines(data: PreparedData, params: BaselinesParams, refit_on_val: bool = False) -> BaselineResults:
    """Reliability over every face's raw ratings (a property of the data set); the SVR chosen on val and fitted on
    the faces the trained models learn from (`refit_on_val`: train.fit_on train+val), so both compare on equal terms."""
    started = time.perf_counter()
    ratings = data.ratings()
    reliability = halves = None
    if ratings is not None:
        ratings = independent_ratings(ratings, params.exclude_rating_types)
        # an attribute without raw ratings (us10k's HR - FAR memorability) has no reliability: NaN, not an error
        rated = [a for a in data.attributes if a in set(ratings["attribute"].astype(str))]
        halves = split_halves(ratings, rated, params.reliability_repeats, params.seed)
        reliability = reliability_table(halves).reindex(pd.Index(data.attributes, name="attribute"))
    after_reliability = time.perf_counter()
    settings = params.handcrafted
    features = handcrafted_features(
        data.images, settings.hist_bins, settings.lbp_points, settings.lbp_radius, settings.hog_orientations,
        settings.hog_cell, n_jobs=params.workers or (os.cpu_count() or 1),
    )  # fmt: skip
    after_features = time.perf_counter()
    targets = data.faces[list(data.attributes)].to_numpy(dtype=np.float64)
    handcrafted = fit_svr_baseline(
        features, targets, data.indices("train"), data.indices("val"), settings.c_grid, settings.epsilon, settings.gamma,
        refit_rows=data.indices("train", "val") if refit_on_val else None,
    )  # fmt: skip
    seconds = {
        "reliability": after_reliability - started,
        "features": after_features - after_reliability,
        "svr": time.perf_counter() - after_features,
    }
    return BaselineResults(reliability, handcrafted, halves, seconds)


def independent_ratings(ratings: pd.DataFrame, excluded_types: Sequence[str]) -> pd.DataFrame:
    """Ratings without the excluded `rating_type`s: a repeat is no new rater, and would inflate split-half agreement."""
    return ratings[~ratings["rating_type"].isin(list(excluded_types)).to_numpy(dtype=bool)]


def baseline_metrics(data: PreparedData, results: BaselineResults, refit_on_val: bool = False) -> dict[str, Any]:
    """results/baselines/metrics.json: human reliability and ceiling, and the hand-crafted model's test scores, and
    its val scores where it left the val faces out."""
    attributes = list(data.attributes)
    human = data.faces[attributes].to_numpy(dtype=np.float64)
    predicted = results.handcrafted.predictions
    splits = ("test",) if refit_on_val else ("val", "test")
    handcrafted: dict[str, Any] = {
        split: split_metrics(predicted[data.indices(split)], human[data.indices(split)], attributes) for split in splits
    }
    handcrafted["chosen_c"] = dict(zip(attributes, results.handcrafted.chosen_c, strict=True))
    if results.reliability is None:
        return {"human": {"skipped": NO_RAW_RATINGS}, "handcrafted": handcrafted}
    table = results.reliability

    def by_attribute(column: str) -> dict[str, float | None]:
        return {a: json_number(v) for a, v in table[column].items()}

    # a summary is null when no attribute has enough faces for a reliability
    human_summary = {
        "reliability_mean": json_number(table["reliability"].mean()),
        "reliability_min": json_number(table["reliability"].min()),
        "reliability_max": json_number(table["reliability"].max()),
        "ceiling_mean": json_number(table["ceiling"].mean()),
        "reliability": by_attribute("reliability"),
        "ceiling": by_attribute("ceiling"),
    }
    return {"human": human_summary, "handcrafted": handcrafted}


def write_baseline_outputs(
    data: PreparedData, results: BaselineResults, out_dir: Path, refit_on_val: bool = False
) -> dict[str, Any]:
    """metrics.json, reliability.csv (with the split halves it came from) and the hand-crafted predictions: out_dir
    is replaced whole, or not at all."""
    out_dir = Path(out_dir)
    metrics = baseline_metrics(data, results, refit_on_val)
    predictions = predictions_table(data, results.handcrafted.predictions)
    with atomic_directory(out_dir) as folder:
        write_csv(predictions, folder / "handcrafted_predictions.csv", index=False)
        if results.reliability is None:
            empty = pd.DataFrame(columns=["attribute", "reliability", "ceiling", "faces", "ratings_per_face"])
            write_csv(empty, folder / "reliability.csv", index=False)
        else:
            write_csv(results.reliability, folder / "reliability.csv")
        if results.halves is not None:
            write_split_halves(results.halves, data.faces["id"], data.attributes, folder / SPLIT_HALVES_FILE)
        atomic_write_json(folder / "metrics.json", metrics)
    return metrics


def baselines_stage(
    data: PreparedData, params: BaselinesParams, out_dir: Path, refit_on_val: bool = False
) -> StageResult:
    """The baselines stage: both reference points computed and written; test and human scores for MLflow."""
    results = run_baselines(data, params, refit_on_val)
    metrics = write_baseline_outputs(data, results, out_dir, refit_on_val)
    human = metrics["human"]
    if "skipped" in human:
        human_text = f"human reliability skipped: {human['skipped']}"
    else:
        human_text = (
            f"human reliability mean {shown_score(human['reliability_mean'])} "
            f"[{shown_score(human['reliability_min'])}, {shown_score(human['reliability_max'])}]"
        )
    summary = (
        f"{human_text}; hand-crafted SVR test mean Pearson r {shown_score(metrics['handcrafted']['test']['pearson_mean'])} "
        f"({', '.join(f'{k} {v:.1f} s' for k, v in results.seconds.items())}) -> {out_dir}"
    )
    return StageResult(summary, baseline_run_metrics(metrics), [(out_dir, "baselines")])


def baseline_run_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """Every number of metrics.json; the hand-crafted model's scores under the keys the trained models use
    (`test/pearson/<attribute>`), so one MLflow chart overlays every method per attribute."""
    handcrafted = dict(metrics["handcrafted"])
    scores = {split: handcrafted.pop(split) for split in ("val", "test") if split in handcrafted}
    return flat_metrics({**scores, "handcrafted": handcrafted, "human": metrics["human"]})
