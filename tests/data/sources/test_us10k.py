from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from facetraits.data.prepare import prepare_dataset
from facetraits.data.prepared import load_prepared
from facetraits.data.sources import read_source
from facetraits.errors import DataError
from tests.conftest import study_params
from tests.fixtures.layouts import COLOUR_TOLERANCE, centre_colour, fixture_colour, make_us10k


def _params(root: Path, **data: object):
    return study_params(data={"source": "us10k", "path": str(root), "image_size": 32, **data}).data


def test_final_values_and_all_data_sheets(tmp_path: Path) -> None:
    fixture = make_us10k(tmp_path)
    table = read_source(_params(tmp_path))
    assert sorted(table.attributes) == sorted(fixture.attributes)
    assert list(table.faces["id"]) == fixture.ids
    np.testing.assert_array_equal(
        table.faces[fixture.attributes].to_numpy(), fixture.means[fixture.attributes].to_numpy()
    )
    assert all(path.startswith("Face Images/") for path in table.faces["source_file"])
    assert table.ratings is not None
    got = table.ratings.astype({"id": str, "attribute": str}).groupby(["id", "attribute"])["rating"].agg(["count", "mean"])
    want = fixture.ratings.groupby(["id", "attribute"])["rating"].agg(["count", "mean"])
    pd.testing.assert_frame_equal(
        got.sort_index(), want.sort_index(), check_dtype=False, check_names=False, check_index_type=False
    )
    assert table.scale == (1.0, 9.0)


def test_csv_table_without_raw_ratings(tmp_path: Path) -> None:
    fixture = make_us10k(tmp_path, table="csv")
    table = read_source(
        _params(tmp_path, us10k={"table": "Full Attribute Scores/psychology attributes/psychology-attributes.csv"})
    )
    assert table.ratings is None
    np.testing.assert_array_equal(table.faces[fixture.attributes].to_numpy(), fixture.means.to_numpy())


def test_portrait_faces_are_padded_not_cut(tmp_path: Path) -> None:
    fixture = make_us10k(tmp_path / "us10k", n_faces=8)
    prepare_dataset(_params(tmp_path / "us10k", attributes=["happy"]), tmp_path / "out", progress=False)
    data = load_prepared(tmp_path / "out")
    for row, face_id in enumerate(data.faces["id"]):
        image = np.asarray(data.images[row])
        assert np.abs(centre_colour(image) - fixture_colour(face_id)).max() < COLOUR_TOLERANCE
        assert (image[:, :2] > 240).all(), "padding should continue the white background"
    assert set(data.ratings()["attribute"]) == {"happy"}
    assert fixture.ids == list(data.faces["id"])


def test_missing_sheet_is_named(tmp_path: Path) -> None:
    make_us10k(tmp_path)
    with pytest.raises(DataError, match=r"psychology-attributes.xlsx: cannot read sheet 'Means'"):
        read_source(_params(tmp_path, us10k={"sheet": "Means"}))
