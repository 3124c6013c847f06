"""The paper's pre-deep-learning baseline: colour, texture and shape descriptors fed to an RBF SVR.

It shows how much of each impression low-level image statistics already explain, which is the bar a
VGG16 fine-tune has to clear to claim it learned something about faces.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from joblib import Parallel, delayed
from scipy import stats
from skimage.color import rgb2gray, rgb2hsv
from skimage.feature import hog, local_binary_pattern
from skimage.util import img_as_ubyte
from sklearn.metrics.pairwise import rbf_kernel
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVR
from tqdm.auto import tqdm

from facetraits.batching import batches
from facetraits.errors import DataError

CHUNK_FACES = 64  # a memory-mapped 10k-face array is read (and converted to float) a chunk at a time
HOG_CELLS_PER_BLOCK = (2, 2)  # Dalal & Triggs' block: contrast normalised over 2 x 2 cells


def handcrafted_features(
    images: np.ndarray,
    hist_bins: int,
    lbp_points: int,
    lbp_radius: float,
    hog_orientations: int,
    hog_cell: int,
    n_jobs: int = 1,
) -> np.ndarray:
    """(N, F) float32: HSV histograms, then a uniform-LBP histogram and HOG of the grey image.

    Colour is binned in HSV, not RGB: complexion, blush and hair colour differ in hue and saturation,
    while lighting mostly moves value, and RGB channels would be three correlated views of brightness.
    Histograms are fractions of the image, so they do not grow with the image size.
    """
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8 or not len(images):
        raise DataError(f"images must be (N >= 1, H, W, 3) uint8, got {images.shape} {images.dtype}")
    smallest = hog_cell * HOG_CELLS_PER_BLOCK[0]
    if min(images.shape[1:3]) < smallest:
        raise DataError(
            f"images of {images.shape[1]}x{images.shape[2]} px are smaller than one HOG block ({smallest} px)"
        )
    settings = (hist_bins, lbp_points, lbp_radius, hog_orientations, hog_cell)
    parts = list(batches(len(images), CHUNK_FACES))
    chunks = Parallel(n_jobs=n_jobs, return_as="generator")(
        delayed(_chunk_features)(np.asarray(images[part]), *settings) for part in parts
    )
    shown = tqdm(chunks, total=len(parts), desc="hand-crafted features", unit="chunk", disable=len(parts) < 2)
    return np.concatenate(list(shown))


def _chunk_features(
    images: np.ndarray, hist_bins: int, lbp_points: int, lbp_radius: float, hog_orientations: int, hog_cell: int
) -> np.ndarray:
    n, height, width, _ = images.shape
    hsv_bin = np.minimum((rgb2hsv(images) * hist_bins).astype(np.int64), hist_bins - 1)
    slot = (np.arange(n)[:, None, None, None] * 3 + np.arange(3)) * hist_bins + hsv_bin
    colour = np.bincount(slot.ravel(), minlength=n * 3 * hist_bins).reshape(n, 3 * hist_bins) / (height * width)
    grey = img_as_ubyte(rgb2gray(images))  # LBP compares neighbours exactly: integers, not floats
    texture = np.stack(
        [
            np.bincount(
                local_binary_pattern(g, lbp_points, lbp_radius, method="uniform").astype(np.int64).ravel(),
                minlength=lbp_points + 2,
            )
            / (height * width)
            for g in grey
        ]
    )
    shape = np.stack(
        [
            hog(
                g,
                orientations=hog_orientations,
                pixels_per_cell=(hog_cell, hog_cell),
                cells_per_block=HOG_CELLS_PER_BLOCK,
                block_norm="L2-Hys",
                feature_vector=True,
            )
            for g in grey
        ]
    )
    return np.concatenate([colour, texture, shape], axis=1).astype(np.float32)


@dataclass(frozen=True)
class SvrBaselineResult:
    predictions: np.ndarray  # (N, A) float64 in rating units, every face
    chosen_c: tuple[float, ...]  # per attribute, picked by validation Pearson r
    val_pearson: tuple[float, ...]  # per attribute, at the chosen C


def fit_svr_baseline(
    features: np.ndarray,
    targets: np.ndarray,
    train_rows: np.ndarray,
    val_rows: np.ndarray,
    c_grid: Sequence[float],
    epsilon: float,
    gamma: str | float,
    refit_rows: np.ndarray | None = None,
) -> SvrBaselineResult:
    """One standardized-features RBF SVR per attribute, C picked on validation faces, fit on train faces only, or
    refitted with that C on `refit_rows` (train and val faces) as the trained models are with train.fit_on train+val.

    Targets are standardized with the train faces' mean and sd because epsilon (the width of the
    loss-free tube) is in target units: one epsilon then means the same for a 0-100 and a 1-9 scale.
    Faces outside train_rows and val_rows (the test split) are only predicted, never looked at.
    val_pearson is the chosen C's score when fitted on train rows alone, the evidence for the choice.
    The model is StandardScaler + SVR(kernel="rbf"); the kernel is computed once per set of rated
    train faces and shared by every C and attribute (precomputed), which is the same model ~20x faster.
    """
    features, targets = np.asarray(features, dtype=np.float64), np.asarray(targets, dtype=np.float64)
    train_rows = _check_rows(train_rows, "train_rows", len(features))
    val_rows = _check_rows(val_rows, "val_rows", len(features))
    final_rows = None if refit_rows is None else _check_rows(refit_rows, "refit_rows", len(features))
    if targets.ndim != 2 or len(targets) != len(features):
        raise DataError(f"targets must be (N, A) with N = {len(features)} faces, got {targets.shape}")
    if np.intersect1d(train_rows, val_rows).size:
        raise DataError(f"train_rows and val_rows share faces {np.intersect1d(train_rows, val_rows)[:5].tolist()}")
    if not len(c_grid):
        raise DataError("c_grid is empty: no SVR to fit")
    predictions = np.empty(targets.shape, dtype=np.float64)
    chosen_c, val_pearson = [], []
    kernel_rows, kernel = np.empty(0, dtype=np.int64), np.empty((0, 0))
    refit_kernel_rows, refit_kernel = kernel_rows, kernel
    columns = tqdm(range(targets.shape[1]), desc="hand-crafted SVR", unit="attribute", disable=targets.shape[1] < 2)
    for column in columns:
        rating = targets[:, column]
        fit_rows = train_rows[np.isfinite(rating[train_rows])]
        select_rows = val_rows[np.isfinite(rating[val_rows])]
        if len(fit_rows) < 2 or len(select_rows) < 2 or np.std(rating[fit_rows]) == 0:
            raise DataError(
                f"targets column {column}: {len(fit_rows)} rated train and {len(select_rows)} rated val faces; "
                "an SVR needs >= 2 of each and train ratings that vary"
            )
        if not np.array_equal(fit_rows, kernel_rows):
            kernel_rows, kernel = fit_rows, _rbf_kernel_to(features, fit_rows, gamma)
        mean, sd = rating[fit_rows].mean(), rating[fit_rows].std()
        models = [
            SVR(kernel="precomputed", C=c, epsilon=epsilon).fit(kernel[fit_rows], (rating[fit_rows] - mean) / sd)
            for c in c_grid
        ]
        scores = [_pearson(model.predict(kernel[select_rows]), rating[select_rows]) for model in models]
        best = int(np.argmax(scores))  # the first of equal scores: c_grid order breaks ties
        chosen, chosen_kernel = models[best], kernel
        if final_rows is not None:
            fit_rows = final_rows[np.isfinite(rating[final_rows])]
            if not np.array_equal(fit_rows, refit_kernel_rows):
                refit_kernel_rows, refit_kernel = fit_rows, _rbf_kernel_to(features, fit_rows, gamma)
            mean, sd = rating[fit_rows].mean(), rating[fit_rows].std()
            chosen = SVR(kernel="precomputed", C=c_grid[best], epsilon=epsilon)
            chosen_kernel = refit_kernel
            chosen.fit(refit_kernel[fit_rows], (rating[fit_rows] - mean) / sd)
        predictions[:, column] = chosen.predict(chosen_kernel) * sd + mean
        chosen_c.append(float(c_grid[best]))
        val_pearson.append(scores[best])
    return SvrBaselineResult(predictions=predictions, chosen_c=tuple(chosen_c), val_pearson=tuple(val_pearson))


def _rbf_kernel_to(features: np.ndarray, fit_rows: np.ndarray, gamma: str | float) -> np.ndarray:
    """(N, len(fit_rows)) RBF kernel of every face to the fit faces, in features standardized on the fit faces.

    gamma "scale" and "auto" resolve exactly as sklearn.svm.SVR resolves them on the standardized fit faces.
    """
    scaler = StandardScaler().fit(features[fit_rows])
    scaled = scaler.transform(features)
    fit = scaled[fit_rows]
    if gamma == "scale":
        variance = fit.var()
        width = 1.0 / (fit.shape[1] * variance) if variance > 0 else 1.0
    elif gamma == "auto":
        width = 1.0 / fit.shape[1]
    elif isinstance(gamma, str):
        raise DataError(f"gamma must be 'scale', 'auto' or a number, got {gamma!r}")
    else:
        width = float(gamma)
    return rbf_kernel(scaled, fit, gamma=width)


def _check_rows(rows: np.ndarray, name: str, n_faces: int) -> np.ndarray:
    rows = np.asarray(rows)
    if (
        rows.ndim != 1
        or not np.issubdtype(rows.dtype, np.integer)
        or (len(rows) and (rows.min() < 0 or rows.max() >= n_faces))
    ):
        raise DataError(f"{name} must be integer face indices in [0, {n_faces}), got {rows.dtype} {rows.shape}")
    return rows


def _pearson(predicted: np.ndarray, observed: np.ndarray) -> float:
    """Pearson r; 0 for constant predictions (a too-small C), as the network's metrics count it."""
    if np.ptp(predicted) < 1e-12 or np.ptp(observed) < 1e-12:
        return 0.0
    return float(stats.pearsonr(predicted, observed).statistic)
