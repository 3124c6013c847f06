"""What a finished training leaves behind: predictions, the metrics summary and the epoch history."""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torchvision
from lightning.pytorch.loggers import Logger

from facetraits.data.prepared import PreparedData, predictions_table
from facetraits.figures import learning_curves, prediction_scatter, save_figure
from facetraits.files import atomic_directory, atomic_write_json
from facetraits.models.components.net import FaceTraitsNet
from facetraits.config import ModelParams, TrainParams
from facetraits.models.face_module import MONITOR
from facetraits.models.inference import load_net, predict_images
from facetraits.models.metrics import METRIC_NAMES, rounded_scores, shown_score
from facetraits.models.training import FitResult, train_study
from facetraits.numbers import flat_metrics
from facetraits.spreadsheet import write_csv
from facetraits.stage_result import StageResult
from facetraits.tracking import StageRun


def predict_all_faces(data: PreparedData, fits: Sequence[FitResult]) -> np.ndarray:
    """(N, A) predicted ratings in data.attributes order, each attribute from the model that learned it."""
    predicted = np.full((len(data.faces), len(data.attributes)), np.nan, dtype=np.float64)
    for fit in fits:
        net = load_net(fit.best_checkpoint)
        columns = [data.attributes.index(a) for a in fit.attributes]
        predicted[:, columns] = predict_images(net, data.images)
    return predicted


def best_epoch(fit: FitResult) -> dict[str, float]:
    return fit.history.loc[fit.history[MONITOR].idxmax()].to_dict()


def summary_metrics(fits: Sequence[FitResult]) -> dict[str, Any]:
    """results/train/metrics.json: test and best-epoch val scores per attribute, with their means."""
    summary: dict[str, Any] = {}
    for split in ("val", "test"):
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
    frames = [fit.history[["epoch", *columns]].rename(columns=columns) for fit in fits]
    return pd.concat(frames).groupby("epoch", as_index=False).mean().astype({"epoch": int})


def attribute_history_table(fits: Sequence[FitResult]) -> pd.DataFrame:
    """Per-epoch val Pearson r of every attribute, long (epoch, attribute, val_pearson): DVC plots draws one curve
    per attribute from it whatever the attributes are, where a wide table would need each column named."""
    frames = [
        fit.history.melt(id_vars="epoch", value_vars=[f"val/pearson/{a}" for a in fit.attributes],
                         var_name="attribute", value_name="val_pearson")
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


def write_train_outputs(data: PreparedData, fits: Sequence[FitResult], out_dir: Path) -> TrainOutputs:
    """metrics.json, history.csv, val_pearson.csv, predictions.csv and figures under out_dir, each atomically."""
    out_dir = Path(out_dir)
    summary = summary_metrics(fits)
    atomic_write_json(out_dir / "metrics.json", summary)
    history = history_table(fits)
    write_csv(history, out_dir / "history.csv", index=False)
    write_csv(attribute_history_table(fits), out_dir / "val_pearson.csv", index=False)
    table = predictions_table(data, predict_all_faces(data, fits))
    write_csv(table, out_dir / "predictions.csv", index=False)
    tables = ("metrics.json", "history.csv", "val_pearson.csv", "predictions.csv")
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


def log_model(run: StageRun, net: FaceTraitsNet, name: str) -> str:
    """Save with mlflow.pytorch under `name` in the run: signature, input example, target statistics.

    Requirements are pinned so MLflow does not probe the environment (seconds); the default
    torch.export format stores no pickled code. Loads back from f"runs:/{run_id}/{name}".
    """
    import mlflow.pytorch  # heavy (imports Lightning autologging): only the train stage needs it
    from mlflow.models import infer_signature

    net.eval()
    example = torch.rand(2, 3, net.image_size, net.image_size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        output = net(example)
    metadata = {
        "attributes": list(net.attributes),
        "image_size": net.image_size,
        "input": "float32 RGB in [0, 1], shape (batch, 3, image_size, image_size); faces squared as in prepare",
        "output": "ratings in the data set's units, one column per attribute",
        "target_mean": net.target_mean.tolist(),
        "target_std": net.target_std.tolist(),
    }
    requirements = [f"torch=={torch.__version__.split('+')[0]}", f"torchvision=={torchvision.__version__.split('+')[0]}"]
    with tempfile.TemporaryDirectory(prefix="facetraits-model-") as tmp:
        mlflow.pytorch.save_model(
            net,
            Path(tmp) / name,
            signature=infer_signature(example.numpy(), output.numpy()),
            input_example=example.numpy(),
            pip_requirements=requirements,
            metadata=metadata,
        )
        run.log_artifacts(Path(tmp) / name, name)
    return f"runs:/{run.run_id}/{name}"


def train_stage(
    data: PreparedData, model: ModelParams, train: TrainParams, models_dir: Path, out_dir: Path, run: StageRun | None
) -> StageResult | None:
    """The train stage: fit, score and write; Lightning logs the epochs into the stage's MLflow run and each
    model is logged beside them. None on the extra processes of a multi-GPU run (run None): rank 0 writes."""

    def logger_for(prefix: str | None) -> Logger | bool:
        if run is None:
            return False
        from lightning.pytorch.loggers import MLFlowLogger

        return MLFlowLogger(tracking_uri=run.client.tracking_uri, run_id=run.run_id, prefix=prefix or "")

    fits = train_study(data, model, train, models_dir, logger_for)
    if run is None:
        return None
    outputs = write_train_outputs(data, fits, out_dir)
    for fit in fits:
        log_model(run, load_net(fit.best_checkpoint), "model" if len(fits) == 1 else f"model-{fit.attributes[0]}")
    summary = (
        f"trained {len(fits)} model(s) on {len(data.attributes)} attribute(s): test mean Pearson r = "
        f"{shown_score(outputs.summary['test']['pearson_mean'])} (val {shown_score(outputs.summary['val']['pearson_mean'])}) "
        f"-> {models_dir}, {out_dir}"
    )
    return StageResult(summary, outputs.flat_metrics, outputs.artifacts)
