import filecmp
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from facetraits.data import synthetic
from facetraits.data.prepare import prepare_dataset
from facetraits.data.prepared import load_prepared
from facetraits.errors import DataError
from tests.conftest import study_params
from tests.fixtures.layouts import (
    COLOUR_TOLERANCE,
    centre_colour,
    corrupt_image,
    fixture_colour,
    make_omi,
    truncate_image,
    write_huge_image,
)

PREPARED_FILES = ["faces.csv", "factors.csv", "images.npy", "masks.npy", "meta.json", "ratings.csv.gz"]


def _synthetic(n_faces: int = 40, size: int = 32, **data: object):
    return study_params(data={"image_size": size, "synthetic": {"n_faces": n_faces}, **data}).data


@pytest.fixture(scope="module")
def prepared_synthetic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("prep") / "prepared"
    prepare_dataset(_synthetic(workers=2), out, progress=False)
    return out


def test_synthetic_output_files_shapes_and_tables(prepared_synthetic: Path) -> None:
    assert sorted(p.name for p in prepared_synthetic.iterdir()) == PREPARED_FILES
    data = load_prepared(prepared_synthetic)
    assert data.images.shape == (40, 32, 32, 3) and data.images.dtype == np.uint8
    assert list(data.faces.columns[:4]) == ["id", "source_file", "group", "split"]
    assert data.attributes == synthetic.ATTRIBUTES
    ratings = data.ratings()
    assert ratings is not None and list(ratings.columns) == ["id", "attribute", "rating", "rater", "rating_type"]
    assert len(ratings) == 40 * len(synthetic.ATTRIBUTES) * 20
    means = ratings.groupby(["id", "attribute"])["rating"].mean().unstack()[list(data.attributes)]
    np.testing.assert_allclose(means.loc[data.faces["id"]].to_numpy(), data.faces[list(data.attributes)].to_numpy())
    masks = data.masks()
    assert masks is not None and masks.shape == (40, 32, 32)
    assert data.meta["regions"] == list(synthetic.REGIONS)


def test_images_and_masks_match_direct_rendering(prepared_synthetic: Path) -> None:
    data = load_prepared(prepared_synthetic)
    factors = pd.read_csv(prepared_synthetic / "factors.csv")
    assert list(factors["id"]) == list(data.faces["id"])
    for row in (0, 17, 39):
        image, bits = synthetic.render_face(factors[list(synthetic.FACTORS)].to_numpy()[row], 32)
        np.testing.assert_array_equal(data.images[row], image)
        np.testing.assert_array_equal(data.masks()[row], bits)


def test_same_seed_gives_identical_bytes_parallel_or_not(prepared_synthetic: Path, tmp_path: Path) -> None:
    again = tmp_path / "again"
    prepare_dataset(_synthetic(workers=1), again, progress=False)
    for name in PREPARED_FILES:
        assert filecmp.cmp(prepared_synthetic / name, again / name, shallow=False), name
    other = tmp_path / "other"
    report = prepare_dataset(_synthetic(seed=7), other, progress=False)
    assert not filecmp.cmp(prepared_synthetic / "images.npy", other / "images.npy", shallow=False)
    assert report.fingerprint != json.loads((prepared_synthetic / "meta.json").read_text())["fingerprint"]


def test_splits_are_disjoint_and_follow_fractions(prepared_synthetic: Path) -> None:
    faces = load_prepared(prepared_synthetic).faces
    assert faces["split"].value_counts().to_dict() == {"train": 26, "val": 6, "test": 8}
    assert faces["id"].is_unique
    by_split = {s: set(faces.loc[faces["split"] == s, "id"]) for s in ("train", "val", "test")}
    assert not (by_split["train"] & by_split["val"]) and not (by_split["train"] & by_split["test"])
    assert not (by_split["val"] & by_split["test"])


def test_attribute_subset_and_report(tmp_path: Path) -> None:
    report = prepare_dataset(_synthetic(attributes=["happy", "dominant"]), tmp_path / "p", progress=False)
    data = load_prepared(tmp_path / "p")
    assert data.attributes == ("happy", "dominant")
    assert set(data.ratings()["attribute"]) == {"happy", "dominant"}
    assert data.meta["attribute_regions"]["happy"] == list(synthetic.ATTRIBUTE_REGIONS["happy"])
    metrics = report.metrics()
    assert metrics["n_faces"] == 40 and metrics["n_skipped"] == 0
    assert set(metrics["attributes"]) == {"happy", "dominant"}
    assert metrics["attributes"]["happy"]["mean"] == pytest.approx(data.faces["happy"].mean(), abs=1e-6)
    assert report.tracked_metrics()["data/n_train"] == metrics["splits"]["train"]


def test_unknown_attribute_is_refused_and_nothing_is_written(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"data.attributes: unknown attribute\(s\) \['hapy'\]"):
        prepare_dataset(_synthetic(attributes=["hapy"]), tmp_path / "p", progress=False)
    assert list(tmp_path.iterdir()) == []


def _omi(root: Path, **data: object):
    return study_params(data={"source": "omi", "path": str(root), "image_size": 32, "workers": 2, **data}).data


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (corrupt_image, "cannot decode image"),
        (truncate_image, "cannot decode image"),
        (lambda path: path.unlink(), "image file not found"),
        (lambda path: write_huge_image(path, 2_000_000), "over data.max_image_pixels = 1000000"),
    ],
    ids=["corrupt", "truncated", "missing", "too-many-pixels"],
)
def test_bad_image_errors_and_keeps_previous_output(tmp_path: Path, damage, reason: str) -> None:
    fixture = make_omi(tmp_path / "omi", n_faces=20)
    out = tmp_path / "out"
    first = prepare_dataset(_omi(tmp_path / "omi", max_image_pixels=1_000_000), out, progress=False)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    bad_id = fixture.ids[7]
    damage(fixture.images[bad_id][0])
    with pytest.raises(DataError, match=rf"1 bad image\(s\).*\n  .*images/{bad_id}.jpg: .*{reason}"):
        prepare_dataset(_omi(tmp_path / "omi", max_image_pixels=1_000_000), out, progress=False)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["omi", "out"]

    report = prepare_dataset(
        _omi(tmp_path / "omi", max_image_pixels=1_000_000, on_bad_image="skip"), out, progress=False
    )
    assert [(s.id, s.source_file) for s in report.skipped] == [(bad_id, f"images/{bad_id}.jpg")]
    assert reason in report.skipped[0].reason
    assert report.metrics()["n_skipped"] == 1 and report.n_faces == first.n_faces - 1
    data = load_prepared(out)
    assert bad_id not in set(data.faces["id"]) and len(data.images) == 19
    assert bad_id not in set(data.ratings()["id"])
    for row, face_id in enumerate(data.faces["id"]):
        assert np.abs(centre_colour(np.asarray(data.images[row])) - fixture_colour(face_id)).max() < COLOUR_TOLERANCE
    assert data.meta["skipped"][0]["id"] == bad_id


def test_every_image_bad_is_an_error_even_when_skipping(tmp_path: Path) -> None:
    fixture = make_omi(tmp_path / "omi", n_faces=8)
    for paths in fixture.images.values():
        corrupt_image(paths[0])
    with pytest.raises(DataError, match="every image of data.source 'omi' failed to decode"):
        prepare_dataset(_omi(tmp_path / "omi", on_bad_image="skip"), tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()
