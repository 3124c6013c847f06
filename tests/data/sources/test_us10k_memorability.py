"""us10k's memorability target: joined by Filename next to the traits, with per-trial ratings for the ceiling."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from openpyxl import load_workbook

from facetraits.baselines.reliability import split_half_reliability
from facetraits.data.prepare import prepare_dataset
from facetraits.data.prepared import load_prepared
from facetraits.data.sources import read_source
from facetraits.errors import DataError
from tests.conftest import study_params
from tests.fixtures.layouts import US10K_MEMORABILITY_FILE, make_us10k, make_us10k_memorability

TRAITS = ["happy", "trustworthy"]


def _params(root: Path, memorability: str = "hit_rate", attributes: object = (*TRAITS, "memorability"), **us10k: object):
    attributes = attributes if isinstance(attributes, str) else list(attributes)
    settings = {"memorability": memorability, **us10k}
    return study_params(data={"source": "us10k", "path": str(root), "attributes": attributes, "us10k": settings}).data


def test_hit_rate_joins_by_filename_and_each_trial_is_a_rating(tmp_path: Path) -> None:
    faces = make_us10k(tmp_path, n_faces=12, attributes=TRAITS)
    memory = make_us10k_memorability(tmp_path, faces.ids, missing=2)
    table = read_source(_params(tmp_path))
    assert table.attributes == (*TRAITS, "memorability")
    assert table.scale == (1.0, 9.0) and table.other_scales == {"memorability": (0.0, 1.0)}
    by_id = table.faces.set_index("id")
    np.testing.assert_array_equal(by_id.loc[faces.ids[:-2], "memorability"], memory.scores.loc[faces.ids[:-2], "Hit Rate (HR)"])
    assert by_id.loc[faces.ids[-2:], "memorability"].isna().all()  # traits but no memorability: missing, not dropped
    np.testing.assert_array_equal(by_id[TRAITS].to_numpy(), faces.means[TRAITS].to_numpy())

    trials = table.ratings[table.ratings["attribute"] == "memorability"].astype({"id": str})
    counted = trials.groupby("id")["rating"].agg(["sum", "count"])
    expected = memory.scores.assign(trials=memory.scores["Hits"] + memory.scores["Misses"])
    np.testing.assert_array_equal(counted.loc[expected.index, "sum"], expected["Hits"])
    np.testing.assert_array_equal(counted.loc[expected.index, "count"], expected["trials"])
    np.testing.assert_allclose(trials.groupby("id")["rating"].mean().loc[expected.index], expected["Hit Rate (HR)"])
    traits = table.ratings[table.ratings["attribute"] != "memorability"]
    assert len(traits) == len(faces.ratings) and set(traits["attribute"]) == set(TRAITS)


def test_prepare_records_the_scale_and_the_split_half_ceiling_reads_memorability(tmp_path: Path) -> None:
    faces = make_us10k(tmp_path / "us10k", n_faces=40, attributes=TRAITS)
    memory = make_us10k_memorability(tmp_path / "us10k", faces.ids, trials=(60, 80))
    params = study_params(
        data={"source": "us10k", "path": str(tmp_path / "us10k"), "image_size": 32, "us10k": {"memorability": "hit_rate"}}
    ).data
    prepare_dataset(params, tmp_path / "out", progress=False)
    data = load_prepared(tmp_path / "out")
    assert data.attributes == (*faces.attributes, "memorability")
    assert data.meta["scale"] == [1.0, 9.0] and data.meta["other_scales"] == {"memorability": [0.0, 1.0]}
    reliability = split_half_reliability(data.ratings(), data.attributes, repeats=50, seed=0)
    assert reliability.loc["memorability", "faces"] == 40
    assert reliability.loc["memorability", "ratings_per_face"] == pytest.approx((memory.scores["Hits"] + memory.scores["Misses"]).mean())
    # 40 faces: the estimate is within sampling error of what the simulation implies (0.94 here)
    assert reliability.loc["memorability", "reliability"] == pytest.approx(memory.expected_reliability, abs=0.06)


def test_corrected_hit_rate_has_no_trials_and_memorability_alone_is_allowed(tmp_path: Path) -> None:
    faces = make_us10k(tmp_path, n_faces=8, attributes=TRAITS, with_raw=False)
    memory = make_us10k_memorability(tmp_path, faces.ids)
    table = read_source(_params(tmp_path, "corrected_hit_rate", attributes=["memorability"]))
    assert table.attributes == ("memorability",) and table.ratings is None
    assert table.other_scales == {"memorability": (-1.0, 1.0)}
    expected = memory.scores["Hit Rate (HR)"] - memory.scores["False Alarm Rate (FAR)"]
    np.testing.assert_allclose(table.faces.set_index("id").loc[faces.ids, "memorability"], expected.loc[faces.ids])
    no_counts = read_source(_params(tmp_path, memorability_columns={"hits": None, "misses": None}))
    assert no_counts.ratings is None


def _rewrite_cell(path: Path, column: str, row: int, value: object) -> None:
    """Set one cell of the memorability sheet (row as the sheet numbers it; column by header name)."""
    workbook = load_workbook(path)
    sheet = workbook.worksheets[0]
    header = [cell.value for cell in sheet[1]]
    sheet.cell(row=row, column=header.index(column) + 1, value=value)
    workbook.save(path)


@pytest.mark.parametrize(
    ("column", "value", "message"),
    [
        ("Hit Rate (HR)", 1.5, r"column 'Hit Rate \(HR\)': rating outside the scale \[0, 1\] at row 4"),
        ("Hits", 2.5, r"column 'Hits': not a whole count at row 4"),
        ("Hits", -1, r"column 'Hits': rating outside the scale \[0, inf\] at row 4"),
        ("Misses", 0, r"row 4: 'Hit Rate \(HR\)' = .* but 'Hits' / \('Hits' \+ 'Misses'\) = .*do not belong"),
        ("Filename", "Google_1_nobody_1_oval.jpg", r"not in the attribute table \(1\): row 4 \('Google_1_nobody"),
    ],
)
def test_bad_cells_are_named_by_file_sheet_row_and_column(tmp_path: Path, column, value, message) -> None:
    faces = make_us10k(tmp_path, n_faces=6, attributes=TRAITS)
    memory = make_us10k_memorability(tmp_path, faces.ids)
    _rewrite_cell(memory.path, column, 4, value)
    with pytest.raises(DataError, match=r"memorability-scores\.xlsx first sheet: .*" + message):
        read_source(_params(tmp_path))


def test_a_misspelt_column_names_its_knob_and_the_columns_present(tmp_path: Path) -> None:
    faces = make_us10k(tmp_path, n_faces=6, attributes=TRAITS)
    make_us10k_memorability(tmp_path, faces.ids)
    with pytest.raises(DataError, match=r"no column 'HITS' \(data\.us10k\.memorability_columns\.hits: .*or null.*'Hits'"):
        read_source(_params(tmp_path, memorability_columns={"hits": "HITS"}))
    with pytest.raises(DataError, match=r"data\.attributes does not list 'memorability'"):
        read_source(_params(tmp_path, attributes=TRAITS))
    (tmp_path / US10K_MEMORABILITY_FILE).unlink()
    with pytest.raises(DataError, match=r"memorability-scores\.xlsx: memorability table not found"):
        read_source(_params(tmp_path))
    assert "memorability" not in read_source(_params(tmp_path, "none", attributes="all")).attributes
