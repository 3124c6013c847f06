"""What a finished training leaves behind: predictions, the metrics summary and the epoch history."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from lightning.pytorch.loggers import Logger, MLFlowLogger
from lightning.pytorch.utilities import rank_zero_only

from facetraits.data.face_features import CachedFaceFeatures, load_face_features
from facetraits.data.prepared import FEATURES_FILE, PREDICTIONS_FILE, VAL_PREDICTIONS_FILE, PreparedData, predictions_table
from facetraits.figures import learning_curves, prediction_scatter, save_figure
from facetraits.files import atomic_directory, atomic_path, atomic_write_json
from facetraits.config import ModelParams, TrackingParams, TrainParams
from facetraits.models.face_module import MONITOR
from facetraits.models.inference import (
    backbone_features,
    load_net,
    predict_from_features,
    predict_images,
    resolve_precision,
)
from facetraits.models.metrics import METRIC_NAMES, rounded_scores, shown_score
from facetraits.models.registry import log_model, model_name, register_model
from facetraits.models.training import FitResult, train_study
from facetraits.numbers import flat_metrics
from facetraits.spreadsheet import write_csv
from facetraits.stage_result import StageResult
from facetraits.tracking import StageRun, system_metrics


def predict_all_faces(
    data: PreparedData, fits: Sequence[FitResult], precision: str = "32-true",
    face_features: CachedFaceFeatures | None = None,
) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """(N, A) predicted ratings in data.attributes order, each attribute from the model that learned it (a fused
    probe's face blocks from `face_features`, the face_features stage's), and the first model's (N, D) features,
    which its heads read: the manifold stage maps them, so every face goes through a backbone once."""
    predicted = np.full((len(data.faces), len(data.attributes)), np.nan, dtype=np.float64)
    features = None
    for fit in fits:
        net = load_net(fit.best_checkpoint)
        columns = [data.attributes.index(a) for a in fit.attributes]
        face = None if net.face_blocks is None else face_features.columns(net.face_blocks.blocks)
        if features is None:
            features = backbone_features(net, data.images, precision=precision, face_features=face)
            predicted[:, columns] = predict_from_features(net, features, precision)
        else:
            predicted[:, columns] = predict_images(net, data.images, precision=precision, face_features=face)
    return predicted, features


def val_predictions_table(
    data: PreparedData, fits: Sequence[FitResult], predicted: np.ndarray, refits_on_val: bool
) -> pd.DataFrame:
    """The val faces' rows of predictions_table from models that did not learn from them: the final models' when
    they learned from train alone, else each fit's holdout_val; no rows where there are none (a fine-tune fitted
    on train+val without train.holdout_fit)."""
    val_rows = data.indices("val")
    out_of_sample = np.full_like(predicted, np.nan)
    if not refits_on_val:
        out_of_sample[val_rows] = predicted[val_rows]
    elif all(fit.holdout_val is not None for fit in fits):
        for fit in fits:
            out_of_sample[np.ix_(val_rows, [data.attributes.index(a) for a in fit.attributes])] = fit.holdout_val
    else:
        val_rows = val_rows[:0]
    table = predictions_table(data, out_of_sample)
    return table[table["id"].isin(data.faces["id"].iloc[val_rows])].reset_index(drop=True)


def best_epoch(fit: FitResult) -> dict[str, float] | None:
    """The epoch with the best mean val r; None for a model fitted on train+val, which has no val scores."""
    if MONITOR not in fit.history or fit.history[MONITOR].isna().all():
        return None
    return fit.history.loc[fit.history[MONITOR].idxmax()].to_dict()


def summary_metrics(fits: Sequence[FitResult]) -> dict[str, Any]:
    """results/train/metrics.json: test and best-epoch val scores per attribute, with their means (val only where
    the models left the val faces out)."""
    summary: dict[str, Any] = {}
    validated = all(best_epoch(fit) is not None for fit in fits)
    for split in ("val", "test") if validated else ("test",):
        per_attribute: dict[str, dict[str, float]] = {name: {} for name in METRIC_NAMES}
        for fit in fits:
            source = fit.test if split == "test" else best_epoch(fit)
            for name in METRIC_NAMES:
                for attribute in fit.attributes:
                    per_attribute[name][attribute] = float(source[f"{split}/{name}/{attribute}"])
        summary[split] = rounded_scores(per_attribute)
    summary["epochs"] = {",".join(fit.attributes) if len(fits) > 1 else "all": len(fit.history) for fit in fits}
    return summary


def history_table(fits: Sequence[FitResult]) -> pd.DataFrame:
    """Per-epoch curves for DVC plots: epoch, train_loss, val_loss, val_pearson_mean (averaged over fits)."""
    columns = {"train/loss": "train_loss", "val/loss": "val_loss", MONITOR: "val_pearson_mean"}
    frames = [fit.history.reindex(columns=["epoch", *columns]).rename(columns=columns) for fit in fits]
    return pd.concat(frames).groupby("epoch", as_index=False).mean().astype({"epoch": int})


def attribute_history_table(fits: Sequence[FitResult]) -> pd.DataFrame:
    """Per-epoch val Pearson r of every attribute, long (epoch, attribute, val_pearson): DVC plots draws one curve
    per attribute from it whatever the attributes are, where a wide table would need each column named."""
    frames = [
        fit.history.reindex(columns=["epoch", *(f"val/pearson/{a}" for a in fit.attributes)])
        .melt(id_vars="epoch", var_name="attribute", value_name="val_pearson")
        for fit in fits
    ]  # fmt: skip
    table = pd.concat(frames, ignore_index=True).astype({"epoch": int})
    table["attribute"] = table["attribute"].str.removeprefix("val/pearson/")
    return table.sort_values(["epoch", "attribute"], kind="stable", ignore_index=True)


@dataclass(frozen=True)
class TrainOutputs:
    summary: dict[str, Any]
    flat_metrics: dict[str, float]
    artifacts: list[tuple[Path, str]]


def write_train_outputs(
    data: PreparedData, fits: Sequence[FitResult], out_dir: Path, precision: str = "32-true",
    face_features: CachedFaceFeatures | None = None, refits_on_val: bool = False,
) -> TrainOutputs:  # fmt: skip
    """metrics.json, history.csv, val_pearson.csv, predictions.csv, val_predictions.csv, features.npy and figures
    under out_dir, each atomically; predictions and features in the precision the models were tested in."""
    out_dir = Path(out_dir)
    summary = summary_metrics(fits)
    atomic_write_json(out_dir / "metrics.json", summary)
    history = history_table(fits)
    write_csv(history, out_dir / "history.csv", index=False)
    write_csv(attribute_history_table(fits), out_dir / "val_pearson.csv", index=False)
    predicted, features = predict_all_faces(data, fits, precision, face_features)
    table = predictions_table(data, predicted)
    write_csv(table, out_dir / PREDICTIONS_FILE, index=False)
    write_csv(val_predictions_table(data, fits, predicted, refits_on_val), out_dir / VAL_PREDICTIONS_FILE, index=False)
    with atomic_path(out_dir / FEATURES_FILE) as tmp, tmp.open("wb") as file:
        np.save(file, features)
    tables = ("metrics.json", "history.csv", "val_pearson.csv", PREDICTIONS_FILE, VAL_PREDICTIONS_FILE)
    artifacts = [(out_dir / name, "train") for name in tables]
    with atomic_directory(out_dir / "figures") as figures:  # a whole new folder: no figure of an earlier run stays
        save_figure(learning_curves(history), figures / "learning_curves.png")
        artifacts.append((out_dir / "figures" / "learning_curves.png", "train/figures"))
        test = table[table["split"] == "test"]
        for attribute, rows in test.groupby("attribute", sort=False):
            figure = prediction_scatter(rows["human"].to_numpy(), rows["predicted"].to_numpy(), str(attribute), "test")
            save_figure(figure, figures / "scatter" / f"{attribute}.png")
            artifacts.append((out_dir / "figures" / "scatter" / f"{attribute}.png", "train/figures/scatter"))
    return TrainOutputs(summary=summary, flat_metrics=flat_metrics({"test": summary["test"]}), artifacts=artifacts)


class EpochLogger(MLFlowLogger):
    """Lightning's MLflow logger with the epoch as the step (the UI's x-axis), without a second copy of the params
    the stage run already has, and without test scores: the stage logs each final value once, linked to its model."""

    @rank_zero_only
    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        pass

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        epoch = metrics.get("epoch")
        kept = {k: v for k, v in metrics.items() if k != "epoch" and not k.startswith("test/")}
        if kept:
            super().log_metrics(kept, step=int(epoch) if epoch is not None else step)


def train_stage(
    data: PreparedData, model: ModelParams, train: TrainParams, tracking: TrackingParams, models_dir: Path,
    out_dir: Path, run: StageRun | None, face_features_dir: Path,
) -> StageResult | None:
    """The train stage: fit, score and write; Lightning logs the epochs into the stage's MLflow run, each model
    is logged as an MLflow model and, when it is one model, registered. None on the extra processes of a
    multi-GPU run (run None): rank 0 writes. A fused probe reads its face blocks from `face_features_dir`."""

    def logger_for(prefix: str | None) -> Logger | bool:
        if run is None:
            return False
        return EpochLogger(tracking_uri=run.client.tracking_uri, run_id=run.run_id, prefix=prefix or "")

    fused = train.protocol == "probe" and len(train.probe_blocks) > 1
    face_features = load_face_features(face_features_dir, data) if fused else None
    with system_metrics(run, tracking.system_metrics_s):
        fits = train_study(data, model, train, models_dir, logger_for, face_features=face_features)
    if run is None:
        return None
    outputs = write_train_outputs(data, fits, out_dir, resolve_precision(train), face_features, train.refits_on_val)
    params = run.client.get_run(run.run_id).data.params
    names = [model_name(run, None if len(fits) == 1 else fit.attributes[0]) for fit in fits]
    model_ids = [log_model(run, load_net(fit.best_checkpoint), name, params) for fit, name in zip(fits, names)]
    val_mean, test_mean = outputs.summary.get("val", {}).get("pearson_mean"), outputs.summary["test"]["pearson_mean"]
    # a model fitted on train+val has no val score: it is registered, but never ranked against one that has
    val_text = "fitted on train+val: no val score" if val_mean is None else f"val mean Pearson r {shown_score(val_mean)}"
    summary = (
        f"trained {len(fits)} model(s) on {len(data.attributes)} attribute(s): test mean Pearson r = "
        f"{shown_score(test_mean)} ({val_text}) -> {models_dir}, {out_dir}"
    )
    if len(fits) == 1 and tracking.register:
        description = f"{model.backbone} ({train.protocol}), {val_text}, run {run.run_id}"
        version = register_model(run, model_ids[0], tracking.experiment, tracking.alias, val_mean, description)
        summary += f"; registered models:/{tracking.experiment}/{version}"
    return StageResult(summary, outputs.flat_metrics, outputs.artifacts, model_id=model_ids[0] if len(fits) == 1 else None)
