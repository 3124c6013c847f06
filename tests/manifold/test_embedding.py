from collections.abc import Iterator

import numpy as np
import pandas as pd
import pytest
from sklearn.decomposition import PCA
from sklearn.metrics import silhouette_score
from threadpoolctl import threadpool_limits

from facetraits.errors import ConfigError, DataError
from facetraits.manifold.embedding import (
    MapJob,
    coordinates_table,
    embed,
    embed_maps,
    impute_with_means,
    reduce_for_maps,
    standardize_columns,
)


def two_clusters(rows: int = 80, columns: int = 30, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two Gaussian blobs 6 sd apart along every axis, and which blob each row came from."""
    rng = np.random.default_rng(seed)
    cluster = np.arange(rows) % 2
    return rng.normal(size=(rows, columns)) + 6.0 * cluster[:, None], cluster


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """t-SNE's OpenMP threads spin for seconds on a busy 2-core box; one thread gives the same maps, fast."""
    with threadpool_limits(1):
        yield


@pytest.fixture(scope="module")
def umap_maps() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """UMAP is compiled on its first fit in a process (~10 s): fit once, reuse."""
    values, cluster = two_clusters()
    return embed(values, "umap", 2, seed=0), embed(values, "umap", 2, seed=0), cluster


def test_standardize_gives_unit_columns_and_zeroes_constant_ones() -> None:
    values = np.column_stack([np.arange(10.0) * 1000, np.full(10, 7.0), np.linspace(-1, 1, 10)])
    scaled = standardize_columns(values)
    np.testing.assert_allclose(scaled.mean(axis=0), 0, atol=1e-12)
    np.testing.assert_allclose(scaled.std(axis=0), [1, 0, 1], atol=1e-12)
    assert standardize_columns(values.astype(np.float32)).dtype == np.float32


@pytest.mark.parametrize("method", ["pca", "tsne"])
def test_map_ignores_column_scale(method: str) -> None:
    values, _ = two_clusters(rows=40, columns=8)
    rescaled = values * np.geomspace(1e-3, 1e4, values.shape[1])
    np.testing.assert_allclose(embed(rescaled, method, 2, seed=0), embed(values, method, 2, seed=0), atol=1e-4)


def test_pca_map_is_the_leading_components() -> None:
    rng = np.random.default_rng(1)
    latent = rng.normal(size=(60, 2))
    values = latent[:, [0, 0, 0, 1]] + 0.01 * rng.normal(size=(60, 4))
    coords = embed(values, "pca", 2, seed=0)
    assert coords.shape == (60, 2)
    r = np.corrcoef(coords.T, latent.T)[:2, 2:]
    assert np.abs(np.diag(r)).min() > 0.98


def test_tsne_is_seeded_and_keeps_clusters_apart() -> None:
    values, cluster = two_clusters()
    coords = embed(values, "tsne", 2, seed=3)
    assert coords.shape == (80, 2)
    np.testing.assert_array_equal(coords, embed(values, "tsne", 2, seed=3))
    assert silhouette_score(coords, cluster) > 0.5


def test_tsne_3d_is_seeded() -> None:
    """Only shape and seeding: 3-D t-SNE needs a few hundred faces before clusters come out clean."""
    values, _ = two_clusters(rows=40)
    coords = embed(values, "tsne", 3, seed=0)
    assert coords.shape == (40, 3) and np.isfinite(coords).all()
    np.testing.assert_array_equal(coords, embed(values, "tsne", 3, seed=0))


def test_tsne_reduces_wide_input_first_and_clamps_perplexity_for_tiny_sets() -> None:
    values, _ = two_clusters(rows=8, columns=200)
    coords = embed(values, "tsne", 2, seed=0, perplexity=30, pca_first=5)
    assert coords.shape == (8, 2) and np.isfinite(coords).all()


@pytest.mark.slow
def test_umap_is_seeded_and_keeps_clusters_apart(umap_maps: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    first, second, cluster = umap_maps
    assert first.shape == (80, 2) and first.dtype == np.float64
    np.testing.assert_array_equal(first, second)
    assert silhouette_score(first, cluster) > 0.5


def test_bad_input_names_the_problem() -> None:
    values, _ = two_clusters(rows=20, columns=4)
    values[7, 2] = np.nan
    with pytest.raises(DataError, match="row 7 column 2"):
        embed(values, "pca", 2, seed=0)
    with pytest.raises(ConfigError, match="isomap"):
        embed(values, "isomap", 2, seed=0)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="dims"):
        embed(values, "tsne", 4, seed=0)
    with pytest.raises(DataError, match="3 rows"):
        embed(np.ones((3, 4)), "pca", 2, seed=0)


def test_impute_fills_with_reference_row_means_only() -> None:
    values = np.array([[1.0, 10.0], [3.0, np.nan], [np.nan, 30.0], [100.0, 50.0]])
    filled = impute_with_means(values, rows=np.array([0, 1, 2]), names=["happy", "unhappy"])
    np.testing.assert_array_equal(filled, [[1, 10], [3, 20], [2, 30], [100, 50]])
    with pytest.raises(DataError, match="unhappy"):
        impute_with_means(values, rows=np.array([1]), names=["happy", "unhappy"])


def test_coordinate_tables_round_trip_through_csv(tmp_path) -> None:
    ids = np.array([f"face{i:03d}" for i in range(12)])
    flat, deep = np.random.default_rng(0).normal(size=(12, 2)), np.random.default_rng(1).normal(size=(12, 3))
    table = pd.concat([coordinates_table(ids, flat, "human", "tsne"), coordinates_table(ids, deep, "human", "tsne")])
    assert list(table.columns) == ["id", "source", "method", "dims", "x", "y", "z"]
    table.to_csv(tmp_path / "coordinates.csv", index=False)
    back = pd.read_csv(tmp_path / "coordinates.csv", dtype={"id": str})
    pd.testing.assert_frame_equal(back, table.reset_index(drop=True))
    for dims, coords in ((2, flat), (3, deep)):
        rows = back[back["dims"] == dims]
        np.testing.assert_array_equal(rows["id"], ids)
        np.testing.assert_array_equal(rows[["x", "y", "z"][:dims]], coords)
    assert back.loc[back["dims"] == 2, "z"].isna().all()


def test_maps_drawn_in_two_processes_equal_the_maps_of_one() -> None:
    values, _ = two_clusters(rows=60)
    sources = {"a": values, "b": values[:, ::-1] * 3.0}
    jobs = [MapJob(source, method, 2, 7, 10.0, 5, 8) for source in sources for method in ("pca", "tsne")]
    serial = embed_maps(sources, jobs, workers=1)
    parallel = embed_maps(sources, jobs, workers=2)
    for (one, one_s), (two, two_s), job in zip(serial, parallel, jobs, strict=True):
        np.testing.assert_array_equal(one, two, err_msg=str(job))
        assert one.shape == (60, 2) and one_s >= 0 and two_s >= 0
    np.testing.assert_array_equal(serial[1][0], embed(values, "tsne", 2, 7, 10.0, 5, 8), err_msg="in jobs order")


def test_a_pca_map_drawn_from_the_reduced_rows_is_the_pca_map_of_all_columns() -> None:
    rng = np.random.default_rng(5)
    # wide rows (as backbone features): a few strong directions and noise, more columns than faces
    values = rng.normal(size=(120, 4)) * [9.0, 6.0, 4.0, 2.0] @ rng.normal(size=(4, 700)) + rng.normal(size=(120, 700))
    coords = embed(values, "pca", 3, seed=0, pca_first=20)
    full = PCA(n_components=3, svd_solver="full").fit_transform(standardize_columns(values))
    for axis in range(3):
        sign = np.sign(coords[:, axis] @ full[:, axis])
        np.testing.assert_allclose(coords[:, axis], sign * full[:, axis], atol=1e-6 * np.abs(full).max())
    assert reduce_for_maps(values, seed=0, pca_first=20).shape == (120, 20)
    narrow = values[:, :10]  # no more columns than pca_first: mapped as they are, standardized
    np.testing.assert_array_equal(reduce_for_maps(narrow, seed=0, pca_first=20), standardize_columns(narrow))
