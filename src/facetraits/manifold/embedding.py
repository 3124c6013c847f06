"""Low-dimensional maps of faces from backbone features, predicted or human attribute vectors.

Columns are standardized before any map: backbone units and rating scales differ by orders of magnitude
in variance (ReLU units from near-dead to saturated; OMI age in years next to 0-100 ratings), and
unscaled Euclidean distances would be decided by the few widest columns. After scaling every column
weighs the same; constant columns (dead units) become all-zero and drop out of every distance.
"""

from __future__ import annotations

import multiprocessing
import os
import time
import warnings
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
from sklearn.decomposition import PCA
from sklearn.manifold import TSNE
from sklearn.metrics import pairwise_distances
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits
from tqdm.auto import tqdm

from facetraits.errors import ConfigError, DataError

Method = Literal["pca", "tsne", "umap"]
METHODS: tuple[str, ...] = ("pca", "tsne", "umap")
AXES: tuple[str, ...] = ("x", "y", "z")
# t-SNE's Barnes-Hut gradient is only defined for up to 3 output dimensions; 3 is all the figures use.
MAX_DIMS = 3
MIN_ROWS = 5


def impute_with_means(values: np.ndarray, rows: np.ndarray, names: Sequence[str]) -> np.ndarray:
    """Missing ratings replaced by the attribute's mean over `rows` (the training faces).

    A filled face sits near the attribute's centre (about 0 after standardizing) and adds no spread of its
    own; training-face means keep the fill free of test ratings. The cost: faces missing many ratings drift
    towards the middle of the map, so report how many values were filled.
    """
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 2 or values.shape[1] != len(names):
        raise DataError(f"values must be (faces, {len(names)}) for attributes {list(names)}, got shape {values.shape}")
    reference = values[np.asarray(rows)]
    observed = ~np.isnan(reference).all(axis=0)
    if not observed.all():
        missing = [name for name, seen in zip(names, observed, strict=True) if not seen]
        raise DataError(
            f"attributes {missing} have no rating among the {len(reference)} reference faces to impute from"
        )
    return np.where(np.isnan(values), np.nanmean(reference, axis=0), values)


def standardize_columns(values: np.ndarray) -> np.ndarray:
    """Zero mean, unit variance per column; float32 input stays float32 (10k x 25088 features are 1 GB a copy)."""
    return StandardScaler().fit_transform(_checked_matrix(values))


def reduce_for_maps(values: np.ndarray, seed: int, pca_first: int) -> np.ndarray:
    """The standardized rows' top min(pca_first, D, N-1) principal components; no more columns than that: the
    standardized rows themselves. What every map of a source is drawn from.

    Computed once per source and shared by its maps: on wide backbone features (25,088 columns) the scaling and
    the PCA were done again for each of a source's six maps, and a map process now receives N x 50 values, not
    N x D (1 GB at 10,000 faces).
    """
    scaled = standardize_columns(values)
    rows, columns = scaled.shape
    if rows < MIN_ROWS:
        raise DataError(f"values has {rows} rows; a map needs at least {MIN_ROWS} faces")
    components = min(pca_first, columns, rows - 1)
    if components >= columns:
        return scaled
    # copy=False: `scaled` is this function's own copy, so PCA centres it in place instead of copying it again
    return PCA(n_components=components, random_state=seed, copy=False).fit_transform(scaled)


def embed(
    values: np.ndarray,
    method: Method,
    dims: int,
    seed: int,
    perplexity: float = 30,
    n_neighbors: int = 15,
    pca_first: int = 50,
) -> np.ndarray:
    """(N, dims) coordinates of the standardized rows; the same inputs give the same map bit for bit.

    Every method sees the top min(pca_first, D, N-1) principal components (reduce_for_maps): it removes most
    of the noise dimensions of wide backbone features and makes the neighbour search fast; a PCA map is their
    first `dims` axes, as PCA of the full rows would give (up to sign). Perplexity is clamped below N/3 and
    UMAP's n_neighbors below N so tiny test sets still embed. t-SNE starts from the PCA layout (it keeps the
    global arrangement), so its map hardly depends on the seed; UMAP's does. 3-D t-SNE needs a few hundred
    faces: below that its clusters come out blurred.
    """
    _check_method(method, dims)
    return embed_reduced(reduce_for_maps(values, seed, pca_first), method, dims, seed, perplexity, n_neighbors)


def embed_reduced(
    reduced: np.ndarray, method: Method, dims: int, seed: int, perplexity: float = 30, n_neighbors: int = 15
) -> np.ndarray:
    """embed() of rows already reduced by reduce_for_maps."""
    _check_method(method, dims)
    rows, columns = reduced.shape
    if rows < max(MIN_ROWS, dims + 2):
        raise DataError(f"values has {rows} rows; a {dims}-D map needs at least {max(MIN_ROWS, dims + 2)} faces")
    if method == "pca":
        if dims > columns:
            raise DataError(f"values has {columns} columns (at most pca_first); a {dims}-D PCA map needs {dims}")
        return PCA(n_components=dims, random_state=seed).fit_transform(reduced).astype(np.float64)
    if method == "tsne":
        return _tsne(reduced, dims, seed, perplexity)
    return _umap(reduced, dims, seed, n_neighbors)


def _check_method(method: str, dims: int) -> None:
    if method not in METHODS:
        raise ConfigError(f"manifold method must be one of {METHODS}, got {method!r}")
    if not 1 <= dims <= MAX_DIMS:
        raise ConfigError(f"manifold dims must be 1..{MAX_DIMS}, got {dims}")


def _tsne(reduced: np.ndarray, dims: int, seed: int, perplexity: float) -> np.ndarray:
    if perplexity <= 0:
        raise ConfigError(f"t-SNE perplexity must be positive, got {perplexity}")
    perplexity = min(perplexity, (len(reduced) - 1) / 3)
    tsne = TSNE(n_components=dims, perplexity=perplexity, init="pca", random_state=seed, n_jobs=1)
    # Same map with any thread count, but OpenMP threads spin-wait for each other: on a busy 2-core box a 3-D map
    # of 1000 faces took 37 s with two threads and 9 s with one (6.7 s vs 7.8 s when the box was quiet).
    with threadpool_limits(limits=1, user_api="openmp"):
        return tsne.fit_transform(reduced).astype(np.float64)


# Below this many faces UMAP finds exact neighbours by calling its numba metric once per pair from Python
# (~3.7 s for 1000 faces); a BLAS distance matrix gives the same neighbours in ~2 s less. Above it UMAP
# switches to approximate neighbours (NN-descent), and a dense matrix would no longer fit comfortably.
UMAP_EXACT_BELOW = 4096


def _umap(reduced: np.ndarray, dims: int, seed: int, n_neighbors: int) -> np.ndarray:
    if n_neighbors < 2:
        raise ConfigError(f"UMAP n_neighbors must be at least 2, got {n_neighbors}")
    # Imported here: numba compiles UMAP on its first fit in a process (about 10 s), which PCA/t-SNE callers skip.
    from umap import UMAP

    exact = len(reduced) < UMAP_EXACT_BELOW
    # A random_state makes UMAP single-threaded anyway; n_jobs=1 says so instead of a warning that it overrode it.
    umap = UMAP(
        n_components=dims, n_neighbors=min(n_neighbors, len(reduced) - 1), random_state=seed, n_jobs=1,
        metric="precomputed" if exact else "euclidean",
    )  # fmt: skip
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="using precomputed metric", category=UserWarning)
        coords = umap.fit_transform(pairwise_distances(reduced) if exact else reduced)
    return np.asarray(coords, dtype=np.float64)


@dataclass(frozen=True)
class MapJob:
    """One map to draw: which values, how, in how many dimensions, with the embedding settings."""

    source: str
    method: Method
    dims: int
    seed: int
    perplexity: float
    n_neighbors: int
    pca_first: int

    @property
    def reduction(self) -> tuple[str, int, int]:
        """What reduce_for_maps needs: maps of one source with one seed and pca_first share their reduced rows."""
        return self.source, self.seed, self.pca_first


def embed_each(
    reduced: Mapping[tuple[str, int, int], np.ndarray], jobs: Sequence[MapJob], progress: tqdm | None = None
) -> list[tuple[np.ndarray, float]]:
    """Coordinates and seconds of each job, one after the other, from its source's `reduced` rows (by job.reduction)."""
    done = []
    for job in jobs:
        start = time.perf_counter()
        values = reduced[job.reduction]
        coords = embed_reduced(values, job.method, job.dims, job.seed, job.perplexity, job.n_neighbors)
        done.append((coords, time.perf_counter() - start))
        if progress is not None:
            progress.update()
    return done


def _tasks(jobs: Sequence[MapJob]) -> list[list[int]]:
    """Jobs (by index) grouped into tasks for worker processes, longest first: every UMAP map in one task, as
    numba compiles UMAP (~10 s) in each process that fits one; each t-SNE map alone, 3-D first (~14 s per 1000
    faces, 2-D ~5 s); the PCA maps (milliseconds) together."""
    umap = [i for i, job in enumerate(jobs) if job.method == "umap"]
    tsne = sorted((i for i, job in enumerate(jobs) if job.method == "tsne"), key=lambda i: -jobs[i].dims)
    pca = [i for i, job in enumerate(jobs) if job.method == "pca"]
    umap_cost, tsne_cost = 10 + 1.5 * len(umap), {2: 5, 3: 14}
    tasks = [(umap_cost, umap)] + [(tsne_cost.get(jobs[i].dims, 14), [i]) for i in tsne] + [(0, pca)]
    return [indices for _, indices in sorted((t for t in tasks if t[1]), key=lambda t: -t[0])]


def embed_maps(
    sources: Mapping[str, np.ndarray], jobs: Sequence[MapJob], workers: int, show_progress: bool = True
) -> list[tuple[np.ndarray, float]]:
    """Coordinates and seconds of every job, in `jobs` order, in up to `workers` processes (0: every core).

    t-SNE and UMAP run single-threaded (see _tsne, _umap), so one process leaves the other cores idle. The maps are
    independent and each is seeded: processes give the same coordinates, bit for bit, as one process does.
    """
    tasks = _tasks(jobs)
    workers = min(workers or len(os.sched_getaffinity(0)), len(tasks))
    reduced: dict[tuple[str, int, int], np.ndarray] = {}  # each source scaled and reduced once, here
    for job in jobs:
        if job.reduction not in reduced:
            reduced[job.reduction] = reduce_for_maps(sources[job.source], job.seed, job.pca_first)
    with tqdm(total=len(jobs), desc="manifold maps", unit="map", disable=not show_progress) as progress:
        if workers <= 1:
            return embed_each(reduced, jobs, progress)
        done: dict[int, tuple[np.ndarray, float]] = {}
        # spawn: the parent has started torch's and OpenMP's threads, which a forked child would inherit half-alive
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            submitted = {}
            for task in tasks:
                needed = {jobs[i].reduction: reduced[jobs[i].reduction] for i in task}
                submitted[pool.submit(embed_each, needed, [jobs[i] for i in task])] = task
            for future in as_completed(submitted):
                done.update(zip(submitted[future], future.result(), strict=True))
                progress.update(len(submitted[future]))
    return [done[i] for i in range(len(jobs))]


def coordinates_table(ids: Sequence[str] | np.ndarray, coords: np.ndarray, source: str, method: str) -> pd.DataFrame:
    """Tidy rows id, source, method, dims, x, y[, z]: maps of every source and method concatenate into one CSV."""
    coords = np.asarray(coords, dtype=np.float64)
    if coords.ndim != 2 or not 1 <= coords.shape[1] <= MAX_DIMS or len(coords) != len(ids):
        raise DataError(f"coords must be ({len(ids)}, 1..{MAX_DIMS}) for {len(ids)} ids, got shape {coords.shape}")
    table = pd.DataFrame({"id": np.asarray(ids), "source": source, "method": method, "dims": coords.shape[1]})
    for axis, column in zip(AXES, coords.T, strict=False):
        table[axis] = column
    return table


def _checked_matrix(values: np.ndarray) -> np.ndarray:
    matrix = np.asarray(values)
    if matrix.ndim != 2:
        raise DataError(f"values must be a (faces, features) matrix, got shape {matrix.shape}")
    if matrix.dtype != np.float32:
        matrix = matrix.astype(np.float64, copy=False)
    finite = np.isfinite(matrix)
    if not finite.all():
        row, column = np.argwhere(~finite)[0]
        raise DataError(
            f"values row {row} column {column} is {matrix[row, column]} ({(~finite).sum()} non-finite in all); "
            "impute missing ratings first (impute_with_means)"
        )
    return matrix
