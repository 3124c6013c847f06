from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from facetraits.data.prepare import prepare_dataset
from facetraits.data.prepared import load_prepared
from facetraits.data.sources import read_source
from facetraits.errors import DataError
from tests.conftest import study_params
from tests.fixtures.layouts import COLOUR_TOLERANCE, centre_colour, fixture_colour, make_omi


def _params(root: Path, **data: object):
    return study_params(data={"source": "omi", "path": str(root), "image_size": 32, **data}).data


@pytest.mark.parametrize("ratings_format", ["csv.gz", "csv", "zip"])
def test_means_and_every_raw_rating_are_read(tmp_path: Path, ratings_format: str) -> None:
    fixture = make_omi(tmp_path, ratings=ratings_format)
    table = read_source(_params(tmp_path))
    assert list(table.faces["id"]) == fixture.ids
    assert table.attributes == tuple(fixture.attributes)
    np.testing.assert_array_equal(table.faces[fixture.attributes].to_numpy(), fixture.means.to_numpy())
    assert list(table.faces["source_file"]) == [f"images/{i}.jpg" for i in fixture.ids]
    assert table.ratings is not None
    expected = fixture.ratings
    pd.testing.assert_frame_equal(
        table.ratings[["id", "attribute", "rating", "rating_type"]].astype({"rating_type": str, "id": str, "attribute": str}),
        expected.astype({"rating": float, "rating_type": str, "id": str, "attribute": str}).reset_index(drop=True),
        check_dtype=False,
    )
    assert table.scale == (0.0, 100.0)


def test_no_raw_ratings_file_means_no_ratings(tmp_path: Path) -> None:
    make_omi(tmp_path, ratings=None)
    assert read_source(_params(tmp_path)).ratings is None


def test_prepare_puts_each_image_in_its_row(tmp_path: Path) -> None:
    make_omi(tmp_path / "omi", attributes=("happy", "age"))
    prepare_dataset(_params(tmp_path / "omi", attributes=["happy"]), tmp_path / "out", progress=False)
    data = load_prepared(tmp_path / "out")
    assert data.attributes == ("happy",)
    for row, face_id in enumerate(data.faces["id"]):
        assert np.abs(centre_colour(np.asarray(data.images[row])) - fixture_colour(face_id)).max() < COLOUR_TOLERANCE
    ratings = data.ratings()
    assert set(ratings["attribute"]) == {"happy"}
    assert set(ratings["rating_type"]) <= {"normal", "repeat", "fill-in"}


@pytest.mark.parametrize(
    ("cell", "value", "message"),
    [
        ("happy", "abc", r"column 'happy': non-numeric rating at row 4 \('abc'\)"),
        ("happy", "120", r"column 'happy': rating outside the scale \[0, 100\] at row 4 \(120\)"),
        ("stimulus", None, r"duplicate id at row 3 \('\d+'\), row 4"),
    ],
)
def test_bad_means_table_names_file_row_and_column(tmp_path: Path, cell: str, value: str | None, message: str) -> None:
    make_omi(tmp_path, attributes=("happy", "age"))
    path = tmp_path / "attribute_means.csv"
    table = pd.read_csv(path, dtype=str)
    table.loc[2, cell] = value if value is not None else table.loc[1, cell]
    table.to_csv(path, index=False)
    with pytest.raises(DataError, match=message) as caught:
        read_source(_params(tmp_path))
    assert str(path) in str(caught.value)


def test_out_of_scale_raw_rating_names_the_raw_file(tmp_path: Path) -> None:
    make_omi(tmp_path, ratings="csv")
    path = tmp_path / "attribute_ratings.csv"
    raw = pd.read_csv(path)
    raw.loc[5, "rating"] = -3
    raw.to_csv(path, index=False)
    with pytest.raises(DataError, match=rf"{path}: column 'rating': rating outside the scale \[0, 100\] at row 7"):
        read_source(_params(tmp_path))


def test_missing_columns_and_unknown_attribute(tmp_path: Path) -> None:
    make_omi(tmp_path)
    with pytest.raises(DataError, match=r"data.attributes: unknown attribute\(s\) \['smile'\]"):
        read_source(_params(tmp_path, attributes=["happy", "smile"]))
    pd.read_csv(tmp_path / "attribute_means.csv").rename(columns={"stimulus": "face"}).to_csv(
        tmp_path / "attribute_means.csv", index=False
    )
    with pytest.raises(DataError, match=r"missing column\(s\) \['stimulus'\]"):
        read_source(_params(tmp_path))


def test_missing_data_root_is_named(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"data.path: data root '.*nowhere' is not a directory"):
        read_source(_params(tmp_path / "nowhere"))


def test_real_dev_copy_means_are_the_mean_of_every_rating(omi_dev: Path) -> None:
    table = read_source(_params(omi_dev))
    assert len(table.faces) == 804 and len(table.attributes) == 34
    assert table.ratings is not None and table.ratings["rating"].between(0, 100).all()
    from_raw = table.ratings.groupby(["id", "attribute"])["rating"].mean().unstack()
    np.testing.assert_allclose(
        from_raw.loc[table.faces["id"], list(table.attributes)].to_numpy(),
        table.faces[list(table.attributes)].to_numpy(),
        atol=1e-6,
    )
