"""The prepared-data format: its file names and read-only access to the prepare stage's output folder, for every
later stage."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from facetraits.data.sources.base import NA_OPTIONS
from facetraits.errors import DataError

# The prepared folder's files: written by data/prepare.py, read here by every later stage.
IMAGES_FILE = "images.npy"
FACES_FILE = "faces.csv"
RATINGS_FILE = "ratings.csv.gz"
MASKS_FILE = "masks.npy"
FACTORS_FILE = "factors.csv"
META_FILE = "meta.json"


@dataclass(frozen=True)
class PreparedData:
    root: Path
    images: np.ndarray
    faces: pd.DataFrame
    meta: dict[str, Any]

    @property
    def attributes(self) -> tuple[str, ...]:
        return tuple(self.meta["attributes"])

    def indices(self, *splits: str) -> np.ndarray:
        """Rows of the faces in any of `splits`, in data-set order."""
        return np.flatnonzero(self.faces["split"].isin(splits).to_numpy())

    def ratings(self) -> pd.DataFrame | None:
        path = self.root / RATINGS_FILE
        return pd.read_csv(path, dtype={"id": str}, **NA_OPTIONS) if path.is_file() else None

    def masks(self) -> np.ndarray | None:
        path = self.root / MASKS_FILE
        return np.load(path, mmap_mode="r") if path.is_file() else None

    def relevance_masks(self, attribute: str) -> Callable[[np.ndarray], np.ndarray] | None:
        """rows -> (len(rows), S, S) bool: the pixels of the regions meta.json's `attribute_regions` names for
        `attribute`, where a faithful heatmap goes; read from the memory map row by row. None for data without
        masks (real faces)."""
        region_bits = self.masks()
        if region_bits is None:
            return None
        regions = self.meta["regions"]
        bits = sum(1 << regions.index(region) for region in self.meta["attribute_regions"][attribute])
        return lambda rows: np.bitwise_and(np.asarray(region_bits[rows]), bits) != 0


def load_prepared(root: Path) -> PreparedData:
    root = Path(root)
    for name in (IMAGES_FILE, FACES_FILE, META_FILE):
        if not (root / name).is_file():
            raise DataError(f"{root / name}: missing; run the prepare stage first (dvc repro prepare)")
    meta = json.loads((root / META_FILE).read_text(encoding="utf-8"))
    # an id such as "NA" or "null" stays an id: only an empty cell (a missing rating) is missing
    faces = pd.read_csv(
        root / FACES_FILE, dtype={"id": str, "group": str, "source_file": str, "split": str}, **NA_OPTIONS
    )
    images = np.load(root / IMAGES_FILE, mmap_mode="r")
    if len(images) != len(faces):
        raise DataError(f"{root}: {IMAGES_FILE} has {len(images)} faces but {FACES_FILE} has {len(faces)} rows")
    return PreparedData(root=root, images=images, faces=faces, meta=meta)


# What a training stage writes beside its metrics, for every prepared face: the predictions (predictions_table) and the
# (N, D) features its first model's heads read them from (the manifold stage maps them instead of a second pass).
PREDICTIONS_FILE = "predictions.csv"
# the val faces' ratings by a model that did not learn from them: what an ensemble's weights are chosen on
VAL_PREDICTIONS_FILE = "val_predictions.csv"
FEATURES_FILE = "features.npy"


def predictions_table(data: PreparedData, predicted: np.ndarray) -> pd.DataFrame:
    """Long table for scatter plots: one row per face and attribute, the human mean next to the prediction."""
    attributes = list(data.attributes)
    return pd.DataFrame(
        {
            "id": np.repeat(data.faces["id"].to_numpy(), len(attributes)),
            "split": np.repeat(data.faces["split"].to_numpy(), len(attributes)),
            "attribute": np.tile(np.asarray(attributes), len(data.faces)),
            "human": data.faces[attributes].to_numpy(dtype=np.float64).reshape(-1),
            "predicted": predicted.reshape(-1),
        }
    )


def read_predictions(path: Path, ids: Sequence[str], attributes: Sequence[str]) -> np.ndarray:
    """(faces in `ids` order, attributes) predictions from a stage's long predictions table (predictions_table's)."""
    try:
        table = pd.read_csv(path, dtype={"id": str, "attribute": str, "split": str}, **NA_OPTIONS)
    except FileNotFoundError:
        raise DataError(f"{path}: predictions not found; rerun the stage that writes them (dvc repro)") from None
    wide = table.pivot_table(index="id", columns="attribute", values="predicted", aggfunc="first", dropna=False)
    missing = sorted(set(ids) - set(wide.index)) + sorted(set(attributes) - set(wide.columns))
    if missing:
        raise DataError(f"{path}: no predictions for {missing[:5]}; the file is stale: rerun the stage that writes it")
    return wide.reindex(index=list(ids), columns=list(attributes)).to_numpy(dtype=np.float64)
