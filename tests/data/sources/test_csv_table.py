from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from facetraits.data.prepare import prepare_dataset
from facetraits.data.prepared import load_prepared
from facetraits.data.sources import read_source
from facetraits.errors import DataError
from tests.conftest import study_params
from tests.fixtures.layouts import COLOUR_TOLERANCE, centre_colour, fixture_colour, make_csv


def _params(root: Path, **csv: object):
    return study_params(
        data={"source": "csv", "path": str(root), "image_size": 32, "csv": {"ratings": "ratings.csv", **csv}}
    ).data


def test_paths_in_subfolders_means_and_long_ratings(tmp_path: Path) -> None:
    fixture = make_csv(tmp_path)
    table = read_source(_params(tmp_path))
    assert list(table.faces["id"]) == fixture.ids == list(table.faces["source_file"])
    np.testing.assert_array_equal(table.faces[fixture.attributes].to_numpy(), fixture.means.to_numpy())
    assert table.ratings is not None and len(table.ratings) == len(fixture.ratings)
    assert table.ratings["rater"].notna().all()
    means = table.ratings.groupby(["id", "attribute"])["rating"].mean().unstack()
    np.testing.assert_allclose(means.loc[fixture.ids, fixture.attributes].to_numpy(), fixture.means.to_numpy())


def test_prepare_reads_png_and_jpg(tmp_path: Path) -> None:
    make_csv(tmp_path / "csv", n_faces=12)
    prepare_dataset(_params(tmp_path / "csv"), tmp_path / "out", progress=False)
    data = load_prepared(tmp_path / "out")
    for row, face_id in enumerate(data.faces["id"]):
        assert np.abs(centre_colour(np.asarray(data.images[row])) - fixture_colour(face_id)).max() < COLOUR_TOLERANCE


def test_id_and_group_columns(tmp_path: Path) -> None:
    fixture = make_csv(tmp_path, with_ratings=False)
    path = tmp_path / "faces.csv"
    table = pd.read_csv(path)
    table.insert(0, "person", [f"p{i // 3}" for i in range(len(table))])
    table.insert(0, "face", [f"f{i}" for i in range(len(table))])
    table.to_csv(path, index=False)
    source = read_source(
        study_params(data={"source": "csv", "path": str(tmp_path), "csv": {"id_column": "face", "group_column": "person"}}).data
    )
    assert list(source.faces["id"]) == [f"f{i}" for i in range(len(fixture.ids))]
    assert source.faces["group"].nunique() == len(fixture.ids) // 3
    assert source.attributes == tuple(fixture.attributes)


@pytest.mark.parametrize("bad_path", ["../outside.png", "/etc/passwd", "img/../../x.png"])
def test_paths_escaping_the_data_root_are_refused(tmp_path: Path, bad_path: str) -> None:
    make_csv(tmp_path, with_ratings=False)
    path = tmp_path / "faces.csv"
    table = pd.read_csv(path)
    table.loc[3, "image"] = bad_path
    table.to_csv(path, index=False)
    with pytest.raises(DataError, match=rf"faces.csv row 5: path '{bad_path}' escapes the data root"):
        read_source(_params(tmp_path, ratings=None))


def test_rating_for_an_unknown_image_names_the_row(tmp_path: Path) -> None:
    make_csv(tmp_path)
    path = tmp_path / "ratings.csv"
    raw = pd.read_csv(path)
    raw.loc[0, "image"] = "ghost.png"
    raw.to_csv(path, index=False)
    with pytest.raises(DataError, match=r"ratings.csv: rating for a face that is not in the faces table at row 2 \('ghost.png'\)"):
        read_source(_params(tmp_path))


def test_custom_scale_is_enforced(tmp_path: Path) -> None:
    make_csv(tmp_path)
    with pytest.raises(DataError, match=r"rating outside the scale \[1, 5\]"):
        read_source(_params(tmp_path, rating_range=[1, 5]))
