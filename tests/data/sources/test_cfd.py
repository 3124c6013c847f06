from pathlib import Path

import numpy as np
import pytest

from facetraits.data.prepare import prepare_dataset
from facetraits.data.prepared import load_prepared
from facetraits.data.sources import read_source
from facetraits.errors import DataError
from tests.conftest import study_params
from tests.fixtures.layouts import COLOUR_TOLERANCE, centre_colour, fixture_colour, make_cfd


def _params(root: Path, **data: object):
    return study_params(data={"source": "cfd", "path": str(root), "image_size": 32, **data}).data


@pytest.mark.parametrize("target_column", ["Target", "Model"])
def test_multi_row_header_and_neutral_images(tmp_path: Path, target_column: str) -> None:
    fixture = make_cfd(tmp_path, target_column=target_column)
    table = read_source(_params(tmp_path))
    assert table.attributes == tuple(fixture.attributes)
    assert list(table.faces["group"]) == fixture.ids
    assert all(face_id.endswith("-N") for face_id in table.faces["id"])
    np.testing.assert_array_equal(table.faces[fixture.attributes].to_numpy(), fixture.means.to_numpy())
    assert table.ratings is None and table.scale == (1.0, 7.0)


def test_several_expressions_share_the_targets_ratings_and_split(tmp_path: Path) -> None:
    fixture = make_cfd(tmp_path / "cfd", n_targets=16)
    params = _params(tmp_path / "cfd", cfd={"expressions": ["N", "HC", "A"]})
    prepare_dataset(params, tmp_path / "out", progress=False)
    data = load_prepared(tmp_path / "out")
    written = sum(len(paths) for paths in fixture.images.values())
    assert len(data.faces) == written > 16
    assert data.faces.groupby("group")["split"].nunique().max() == 1
    for row, face in data.faces.iterrows():
        assert fixture.groups[face["id"]] == face["group"]
        assert face[fixture.attributes].tolist() == fixture.means.loc[face["group"]].tolist()
        assert np.abs(centre_colour(np.asarray(data.images[row])) - fixture_colour(face["id"])).max() < COLOUR_TOLERANCE


def test_missing_neutral_image_is_a_bad_image(tmp_path: Path) -> None:
    fixture = make_cfd(tmp_path / "cfd")
    neutral = fixture.images[fixture.ids[0]][0]
    neutral.unlink()
    with pytest.raises(DataError, match=rf"CFD-{fixture.ids[0]}-\*-N.jpg: image file not found"):
        prepare_dataset(_params(tmp_path / "cfd"), tmp_path / "out", progress=False)
    report = prepare_dataset(_params(tmp_path / "cfd", on_bad_image="skip"), tmp_path / "out", progress=False)
    assert [s.id for s in report.skipped] == [f"CFD-{fixture.ids[0]}-N"]


def test_no_norming_sheet_is_named(tmp_path: Path) -> None:
    make_cfd(tmp_path)
    with pytest.raises(DataError, match=r"no sheet 'Ratings' \(data.cfd.sheet\)"):
        read_source(_params(tmp_path, cfd={"sheet": "Ratings"}))
