"""benchmarks/scale.py's growth exponents and table, on made-up costs (no pipeline is run)."""

import importlib

import pytest

from tests.conftest import REPO


@pytest.fixture
def scale(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))  # scale.py imports its sibling study_stages.py
    return importlib.import_module("scale")


def test_the_exponent_is_the_power_of_the_faces_that_the_cost_follows(scale) -> None:
    sizes = [1000, 2000, 4000, 8000]
    assert scale.growth_exponent(sizes, [3e-3 * n for n in sizes]) == pytest.approx(1.0)
    assert scale.growth_exponent(sizes, [2e-7 * n**2 for n in sizes]) == pytest.approx(2.0)
    assert scale.growth_exponent(sizes, [42.0] * 4) == pytest.approx(0.0, abs=1e-12)
    # least squares over all sizes, not the ends only: one noisy middle point moves it a little
    assert scale.growth_exponent(sizes, [10.0, 25.0, 40.0, 80.0]) == pytest.approx(0.968, abs=1e-3)


def test_the_table_has_each_stage_and_measure_by_size_with_exponent_and_last_ratio(scale) -> None:
    cost = scale.StageCost
    results = {
        2000: [cost("prepare", 20.0, 18.0, 400.0), cost("train", 400.0, 700.0, 1500.0)],
        1000: [cost("prepare", 10.0, 9.0, 400.0), cost("train", 100.0, 175.0, 1500.0)],
        4000: [cost("prepare", 40.0, 36.0, 400.0)],  # train did not finish at 4,000
    }
    lines = scale.markdown_table(results).splitlines()
    assert lines[0] == "| stage | measure | 1,000 faces | 2,000 faces | 4,000 faces | exponent k | last ratio |"
    assert lines[1] == "| --- | --- | --- | --- | --- | --- | --- |"
    assert lines[2] == "| prepare | wall s | 10 | 20 | 40 | 1.00 | 2.00 (2x faces) |"
    assert lines[4] == "| prepare | peak RSS MiB | 400 | 400 | 400 | 0.00 | 1.00 (2x faces) |"
    assert lines[5] == "| train | wall s | 100 | 400 | - | 2.00 | 4.00 (2x faces) |"
    assert lines[6] == "| train | CPU s | 175 | 700 | - | 2.00 | 4.00 (2x faces) |"
    assert len(lines) == 2 + 2 * 3


def test_saved_figures_read_back_as_they_were(scale, tmp_path) -> None:
    results = {1000: [scale.StageCost("explain", 88.5, 150.25, 1900.0)]}
    scale.save_results(tmp_path / "scale.json", results)
    assert scale.load_results(tmp_path / "scale.json") == results
