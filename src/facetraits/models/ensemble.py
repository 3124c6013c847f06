"""The ensemble stage's work: named models combined with weights chosen on val, scored and logged as one model."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from facetraits.config import MAIN_MODEL, EnsembleParams, TrackingParams
from facetraits.data.prepared import PREDICTIONS_FILE, VAL_PREDICTIONS_FILE, PreparedData, predictions_table, read_predictions
from facetraits.errors import DataError
from facetraits.files import atomic_directory, atomic_write_json
from facetraits.numbers import pearson_columns
from facetraits.spreadsheet import write_csv
from facetraits.stage_result import StageResult
from facetraits.tracking import StageRun

WEIGHTS_FILE = "weights.json"


@dataclass(frozen=True)
class MemberFolders:
    """Where a member's predictions (the train stage's results) and checkpoint (its models folder) are."""

    name: str
    results: Path
    models: Path


def member_folders(name: str, results: Path, models: Path, variants: Path) -> MemberFolders:
    if name == MAIN_MODEL:
        return MemberFolders(name, Path(results) / "train", Path(models))
    return MemberFolders(name, Path(results) / "variants" / name, Path(variants) / name / "models")


def simplex_grid(members: int, step: float) -> np.ndarray:
    """(combinations, members): every weight vector of multiples of `step` that sums to 1, from the last member
    alone to the first alone (a tie keeps the earlier row: the later members' weight)."""
    units = round(1 / step)
    rows = [c for c in itertools.product(range(units + 1), repeat=members) if sum(c) == units]
    return np.asarray(rows, dtype=np.float64) / units


def choose_weights(val_predictions: np.ndarray, val_human: np.ndarray, step: float, per_attribute: bool) -> np.ndarray:
    """(attributes, members) weights maximizing val Pearson r of the weighted sum: each attribute's own, or the
    one vector with the best mean r over attributes. `val_predictions` (members, faces, attributes); human NaN
    (an unrated face) is left out attribute by attribute."""
    grid = simplex_grid(val_predictions.shape[0], step)
    combined = np.einsum("gm,mfa->gfa", grid, val_predictions)
    r = np.stack([pearson_columns(c, val_human) for c in combined])  # (combinations, attributes)
    if per_attribute:
        return grid[np.argmax(r, axis=0)]
    return np.repeat(grid[np.argmax(r.mean(axis=1))][None, :], val_human.shape[1], axis=0)


def combine(predictions: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """(faces, attributes) weighted sum of (members, faces, attributes) predictions by (attributes, members) weights."""
    return np.einsum("mfa,am->fa", predictions, weights)


def read_val_predictions(folder: MemberFolders, data: PreparedData) -> np.ndarray:
    path = folder.results / VAL_PREDICTIONS_FILE
    ids = data.faces["id"].iloc[data.indices("val")]
    try:
        return read_predictions(path, ids, data.attributes)
    except DataError:
        if path.is_file() and len(ids) and pd.read_csv(path, nrows=1).empty:  # a header alone: stale files differ
            raise DataError(
                f"{path}: no out-of-sample val predictions for ensemble member '{folder.name}' (a fine-tune fitted on "
                "train+val writes them only with train.holdout_fit: true); set it and rerun its train stage"
            ) from None
        raise


def mean_r(predicted: np.ndarray, human: np.ndarray) -> float:
    return float(pearson_columns(predicted, human).mean())


def ensemble_stage(
    params: EnsembleParams, tracking: TrackingParams, data: PreparedData, results: Path, models: Path, variants: Path,
    out_dir: Path, run: StageRun | None,
) -> StageResult:  # fmt: skip
    """The ensemble stage: weights on the members' out-of-sample val predictions, then the combined test scores
    and all-face predictions (what the report reads), the weights and the val comparison, and the combined
    network logged (and registered) as one MLflow model. No members: a note that there is no ensemble. The folder
    is replaced as a whole: no file of an earlier ensemble stays beside the new ones."""
    out_dir = Path(out_dir)
    if not params.members:
        with atomic_directory(out_dir) as tmp:
            atomic_write_json(tmp / WEIGHTS_FILE, {"members": []})
        return StageResult(f"ensemble.members is empty: no ensemble -> {out_dir / WEIGHTS_FILE}")
    folders = [member_folders(name, results, models, variants) for name in params.members]
    human = data.faces[list(data.attributes)].to_numpy(dtype=np.float64)
    val_rows, test_rows = data.indices("val"), data.indices("test")
    val = np.stack([read_val_predictions(folder, data) for folder in folders])
    everyone = np.stack([read_predictions(f.results / PREDICTIONS_FILE, data.faces["id"], data.attributes) for f in folders])
    weights = choose_weights(val, human[val_rows], params.weight_step, params.per_attribute)
    predicted = combine(everyone, weights)
    val_r = {f.name: mean_r(v, human[val_rows]) for f, v in zip(folders, val, strict=True)}
    combined_val_r = mean_r(combine(val, weights), human[val_rows])
    best_member = max(val_r, key=val_r.get)
    from facetraits.models.metrics import split_metrics  # torch: only with members

    test = split_metrics(predicted[test_rows], human[test_rows], data.attributes)
    chosen = {
        "members": list(params.members),
        "per_attribute": params.per_attribute,
        "weight_step": params.weight_step,
        "weights": {a: dict(zip(params.members, map(float, w), strict=True)) for a, w in zip(data.attributes, weights)},
        "val_mean_r": {**val_r, "ensemble": combined_val_r},
        # the ensemble's val r is where its weights were chosen: optimistic by the choice; a tie means one member
        "helps_on_val": bool(combined_val_r > val_r[best_member] + 1e-12),
    }
    with atomic_directory(out_dir) as tmp:
        atomic_write_json(tmp / "metrics.json", {"test": test})
        write_csv(predictions_table(data, predicted), tmp / PREDICTIONS_FILE, index=False)
        atomic_write_json(tmp / WEIGHTS_FILE, chosen)
    summary = (
        f"ensemble of {', '.join(params.members)}: val mean r {combined_val_r:.3f} (best member {best_member} "
        f"{val_r[best_member]:.3f}), test mean r {test['pearson_mean']:.3f} -> {out_dir}"
    )
    metrics = {"ensemble/test_pearson_mean": test["pearson_mean"], "ensemble/val_pearson_mean": combined_val_r}
    metrics |= {f"ensemble/val_pearson_mean/{name}": r for name, r in val_r.items()}
    artifacts = [(out_dir / name, "ensemble") for name in (WEIGHTS_FILE, "metrics.json", PREDICTIONS_FILE)]
    if run is None:
        return StageResult(summary, metrics, artifacts)
    model_id = log_ensemble_model(run, folders, weights, tracking, combined_val_r, params.members)
    return StageResult(summary + f"; MLflow model {model_id}", metrics, artifacts, model_id=model_id)


def log_ensemble_model(
    run: StageRun, folders: Sequence[MemberFolders], weights: np.ndarray, tracking: TrackingParams, val_r: float,
    members: Sequence[str],
) -> str:  # fmt: skip
    """The members' checkpoints and the weights as one network, logged like a trained model (`predict --model
    runs:/<run>/ensemble` rates images with it) and registered under `<experiment>-ensemble`."""
    import torch

    from facetraits.models.components.ensemble import WeightedEnsemble
    from facetraits.models.inference import load_net
    from facetraits.models.registry import log_model, register_model

    nets = [load_net(folder.models / "best.ckpt") for folder in folders]
    net = WeightedEnsemble(nets, torch.from_numpy(weights))
    params: dict[str, Any] = {"members": ",".join(members)}
    model_id = log_model(run, net, "ensemble", params)
    if tracking.register:
        description = f"weighted ensemble of {', '.join(members)} (weights chosen on val), run {run.run_id}"
        register_model(run, model_id, f"{tracking.experiment}-ensemble", tracking.alias, val_r, description)
    return model_id
