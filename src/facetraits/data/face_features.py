"""The face_features stage's folder: dlib's face blocks of every prepared face, computed once per prepared data set
(dlib takes ~0.2 s a face) and read back by prepared row by the stages that fuse them with a backbone's features.

  meta.json       the prepared data's fingerprint (whose faces these are), each block's width, the face count
  <block>.npy     float32 (N, width) per block of face_features.blocks; row i is prepared face i
  undetected.csv  row, id, source_file of the faces dlib's detector missed, measured in the whole-image box
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from facetraits.config import FaceFeaturesParams
from facetraits.data.prepared import PreparedData
from facetraits.errors import ConfigError, DataError
from facetraits.files import atomic_directory
from facetraits.spreadsheet import write_csv
from facetraits.stage_result import StageResult

META_FILE = "meta.json"
UNDETECTED_FILE = "undetected.csv"
UNDETECTED_COLUMNS = ["row", "id", "source_file"]
LISTED_FILES = 10  # in the summary line and an error; the file lists them all


@dataclass(frozen=True)
class CachedFaceFeatures:
    """The face blocks of one prepared data set's faces, by row, and the faces measured in the whole image."""

    root: Path
    blocks: dict[str, np.ndarray]  # block -> (N, width), memory-mapped
    undetected: pd.DataFrame  # UNDETECTED_COLUMNS

    def columns(self, blocks: Sequence[str]) -> np.ndarray:
        """(N, total width) float32: `blocks` side by side, in that order (a fused probe's train.probe_blocks)."""
        missing = [block for block in blocks if block not in self.blocks]
        if missing:
            raise ConfigError(
                f"{self.root}: holds no {missing} features (computed: {sorted(self.blocks)}); add them to "
                "face_features.blocks and rerun the face_features stage (dvc repro face_features)"
            )
        return np.concatenate([np.asarray(self.blocks[block]) for block in blocks], axis=1)


def load_face_features(root: Path, data: PreparedData) -> CachedFaceFeatures:
    """The face_features stage's output for `data`; one written for other prepared faces is refused."""
    root = Path(root)
    if not (root / META_FILE).is_file():
        raise DataError(f"{root / META_FILE}: missing; run the face_features stage first (dvc repro face_features)")
    meta = json.loads((root / META_FILE).read_text(encoding="utf-8"))
    expected = data.meta["fingerprint"]
    if meta.get("prepared_fingerprint") != expected or meta.get("faces") != len(data.faces):
        raise DataError(
            f"{root}: face features of other prepared faces (fingerprint {str(meta.get('prepared_fingerprint'))[:12]}, "
            f"{meta.get('faces')} faces) than {data.root} (fingerprint {expected[:12]}, {len(data.faces)} faces): "
            "rerun the face_features stage (dvc repro face_features)"
        )
    blocks = {block: np.load(root / f"{block}.npy", mmap_mode="r") for block in meta["blocks"]}
    undetected = pd.read_csv(root / UNDETECTED_FILE, dtype={"id": str, "source_file": str}, keep_default_na=False)
    return CachedFaceFeatures(root, blocks, undetected)


def _listed(files: Sequence[str]) -> str:
    shown = ", ".join(files[:LISTED_FILES])
    return shown + (f" and {len(files) - LISTED_FILES} more" if len(files) > LISTED_FILES else "")


def face_features_stage(params: FaceFeaturesParams, data: PreparedData, out_dir: Path) -> StageResult:
    """The face_features stage: face_features.blocks of every prepared face, in parallel processes, written
    atomically with the prepared data's fingerprint. No blocks: the manifest alone, and dlib is never loaded."""
    started = time.perf_counter()
    undetected_rows: tuple[int, ...] = ()
    widths: dict[str, int] = {}
    with atomic_directory(Path(out_dir)) as tmp:
        if params.blocks:
            from facetraits.models.components.face_features import face_features  # dlib: only when asked for

            computed = face_features(data.images, params.blocks, params.workers or None)
            undetected_rows = computed.undetected
            files = data.faces["source_file"].iloc[list(undetected_rows)].tolist()
            if files and params.undetected == "error":
                raise DataError(
                    f"dlib's detector found no face in {len(files)} prepared image(s) of {data.root}: {_listed(files)} "
                    "(face_features.undetected: error; whole_image measures such a face in the whole image)"
                )
            for block in params.blocks:
                np.save(tmp / f"{block}.npy", computed.block(block))
                widths[block] = computed.block(block).shape[1]
        undetected = data.faces.iloc[list(undetected_rows)][UNDETECTED_COLUMNS[1:]]
        undetected.insert(0, "row", list(undetected_rows))
        write_csv(undetected, tmp / UNDETECTED_FILE, index=False)
        meta = {"prepared_fingerprint": data.meta["fingerprint"], "blocks": widths, "faces": len(data.faces)}
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    seconds = time.perf_counter() - started
    if not params.blocks:
        return StageResult(f"face_features.blocks is empty: no face features computed -> {out_dir}/{META_FILE}")
    files = undetected["source_file"].tolist()
    summary = (
        f"face features {list(params.blocks)} of {len(data.faces)} faces in {seconds:.1f} s "
        f"({1000 * seconds / max(len(data.faces), 1):.0f} s per 1,000 faces); dlib's detector missed "
        f"{len(files)}, measured in the whole image{': ' + _listed(files) if files else ''} -> {out_dir}"
    )
    metrics = {
        "face_features/n_faces": len(data.faces),
        "face_features/n_undetected": len(files),
        "face_features/seconds": seconds,
        "face_features/faces_per_s": len(data.faces) / max(seconds, 1e-9),
    }
    return StageResult(summary, metrics, artifacts=[(Path(out_dir) / UNDETECTED_FILE, "face_features")])
