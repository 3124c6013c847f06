"""Predict every attribute for image files with a trained model (checkpoint or MLflow model URI)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urlparse

import numpy as np
import pandas as pd
import torch
import yaml

from facetraits.batching import batches
from facetraits.data.images import load_face
from facetraits.errors import ConfigError
from facetraits.models.inference import image_tensor, load_net
from facetraits.tracking import mlflow_environment

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})
DEFAULT_MAX_PIXELS = 40_000_000
_PICKLE_SWITCH = "MLFLOW_ALLOW_PICKLE_DESERIALIZATION"


@dataclass(frozen=True)
class Predictor:
    """A model that maps a [0, 1] image batch to ratings, with what is needed to feed it."""

    model: Callable[[torch.Tensor], torch.Tensor]
    attributes: tuple[str, ...]
    image_size: int


def _not_loadable(model: str, reason: object) -> ConfigError:
    return ConfigError(f"--model: '{model}' is neither a checkpoint file nor a loadable MLflow model: {reason}")


def _refuse_unsafe_mlflow_model(folder: Path, model: str) -> None:
    """Only the pickle-free torch.export (pt2) format facetraits logs, with no code of its own.

    Checked before MLflow reads the folder: loading a pytorch-flavour model adds its `code` folder to
    sys.path and imports the module a `pickle_module_info.txt` names, which runs code.
    """
    mlmodel = folder / "MLmodel"
    try:
        flavors = (yaml.safe_load(mlmodel.read_text(encoding="utf-8")) or {}).get("flavors")
    except (OSError, UnicodeDecodeError, yaml.YAMLError, AttributeError) as exc:
        raise _not_loadable(model, exc) from None
    if not isinstance(flavors, dict) or not isinstance(flavors.get("pytorch"), dict):
        raise _not_loadable(model, f"no pytorch flavor in {mlmodel}")
    problems = [
        f"flavor '{name}' names code folder {conf['code']!r}"
        for name, conf in flavors.items()
        if isinstance(conf, dict) and conf.get("code")
    ]
    if (folder / "code").exists():
        problems.append("it has a code/ folder")
    data = folder / "data"
    if flavors["pytorch"].get("model_data") != "data" or not (data / "model.pt2").is_file():
        problems.append("its weights are not data/model.pt2 (torch.export format)")
    unsafe = sorted(p.name for p in data.glob("*") if p.name in ("model.pth", "pickle_module_info.txt"))
    if unsafe:
        problems.append(f"data/ holds pickle-format files {unsafe}")
    if problems:
        raise ConfigError(
            f"--model: MLflow model '{model}' refused before loading: {'; '.join(problems)}; facetraits loads only "
            "the pickle-free torch.export models its train stage logs"
        )


def load_predictor(model: str, tracking_uri: str | None = None) -> Predictor:
    """A Lightning checkpoint file, or any MLflow model URI (runs:/..., models:/<name>@<alias>, a model folder)
    looked up in `tracking_uri` (None: MLflow's own default)."""
    path = Path(model)
    if path.is_file():
        net = load_net(path)
        return Predictor(net, net.attributes, net.image_size)
    if not path.exists() and not urlparse(model).scheme:
        raise ConfigError(f"--model: {model}: no such checkpoint file or MLflow model folder")
    import mlflow.pytorch
    from mlflow.artifacts import download_artifacts

    import facetraits.models.components.face_features  # noqa: F401 - registers the operator a fused probe's export uses
    from mlflow.exceptions import MlflowException
    from mlflow.models import get_model_info

    # MLflow finds the registry and a logged model's store in the environment only, whatever is passed to it;
    # and MLflow 3 still unpickles pickle-format models by default: a model file is data, never code to run
    settings = {"MLFLOW_TRACKING_URI": tracking_uri, "MLFLOW_REGISTRY_URI": tracking_uri, _PICKLE_SWITCH: "false"}
    with tempfile.TemporaryDirectory(prefix="facetraits-model-") as tmp, mlflow_environment(**settings):
        try:
            folder = path if path.is_dir() else Path(download_artifacts(artifact_uri=model, dst_path=tmp))
        except (MlflowException, OSError) as exc:
            raise _not_loadable(model, exc) from None
        _refuse_unsafe_mlflow_model(folder, model)
        try:
            metadata = get_model_info(str(folder)).metadata or {}
            loaded = mlflow.pytorch.load_model(str(folder))
        except (MlflowException, OSError) as exc:
            raise _not_loadable(model, exc) from None
    if "attributes" not in metadata or "image_size" not in metadata:
        raise ConfigError(f"--model: MLflow model '{model}' was not logged by facetraits (no attributes in its metadata)")
    return Predictor(loaded, tuple(metadata["attributes"]), int(metadata["image_size"]))


def collect_images(paths: Sequence[Path]) -> list[Path]:
    """Image files named directly or found (recursively, sorted) in named folders."""
    found: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            found += sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        elif path.is_file():
            found.append(path)
        else:
            raise ConfigError(f"{path}: no such image file or folder")
    if not found:
        raise ConfigError(f"no image files in {[str(p) for p in paths]}")
    return found


@torch.no_grad()
def predict_files(
    predictor: Predictor,
    files: Sequence[Path],
    batch_size: int = 32,
    square: Literal["crop", "pad"] = "pad",
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> pd.DataFrame:
    """One row per image: its path, then one predicted rating per attribute."""
    rows = []
    for part in batches(len(files), batch_size):
        batch = np.stack([load_face(f, predictor.image_size, square, max_pixels) for f in files[part]])
        rows.append(predictor.model(image_tensor(batch)).float().numpy())
    table = pd.DataFrame(np.concatenate(rows), columns=list(predictor.attributes))
    table.insert(0, "image", [str(f) for f in files])
    return table
