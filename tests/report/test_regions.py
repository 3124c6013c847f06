"""The report's "Face regions" section: read from explain's region_importance.csv, absent without it."""

import re
from html import unescape
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from facetraits.report.comparison import comparison_table
from facetraits.report.render import REGION_FIGURE, render_html, render_markdown
from facetraits.report.statistics import compare_methods
from facetraits.report.study import read_region_table
from facetraits.spreadsheet import write_csv
from tests.report.test_render import ATTRIBUTES, html_tables, markdown_tables, sources

REGIONS = ("background", "eyes", "mouth")
HOW_TO_READ = "How to read this: each region of the face is replaced in turn by explain.baseline"


def region_csv(results: Path) -> pd.DataFrame:
    """What the explain stage writes: a row per model, attribute and region, with distinct importances."""
    rng = np.random.default_rng(5)
    records = [
        {"model": model, "attribute": attribute, "region": region, "importance": rng.uniform(0, 2),
         "mean_drop": rng.uniform(-1, 1), "area": 0.1, "faces": 7, "undetected": 0,
         "regions_from": "synthetic generator"}
        for model in ("main", "fused <probe>") for attribute in ("happy", "trustworthy") for region in REGIONS
    ]  # fmt: skip
    table = pd.DataFrame.from_records(records)
    (results / "explain").mkdir(parents=True)
    write_csv(table, results / "explain" / "region_importance.csv", index=False, float_format="%.6g")
    return table


def rendered(results: Path) -> tuple[str, str]:
    human, methods = sources()
    table, comparison = comparison_table(human, methods, ATTRIBUTES), compare_methods(methods, ATTRIBUTES)
    regions = read_region_table(results / "explain" / "region_importance.csv")
    return (
        render_markdown("r", table, comparison, [], [], regions=regions),
        render_html("r", table, comparison, [], [], images=results, regions=regions),
    )


def region_section(tables: list[list[list[str]]]) -> list[list[str]]:
    (table,) = [t for t in tables if t[0][:2] == ["model", "attribute"]]
    return table


def test_region_table_cells_are_the_csv_importances_and_the_figure_is_embedded(tmp_path: Path) -> None:
    written = region_csv(tmp_path)
    Image.new("RGB", (40, 30), (200, 30, 30)).save(tmp_path / REGION_FIGURE)
    markdown, html = rendered(tmp_path)
    for table in (region_section(markdown_tables(markdown)), region_section(html_tables(html))):
        assert table[0] == ["model", "attribute", *REGIONS]
        expected = [
            [model, attribute, *(f"{v:.2f}" for v in rows.set_index("region")["importance"].reindex(REGIONS))]
            for (model, attribute), rows in written.groupby(["model", "attribute"], sort=False)
        ]
        assert table[1:] == expected
    assert "## Face regions" in markdown and "<h2>Face regions</h2>" in html
    for text in (unescape(html), re.sub(r"\\(.)", r"\1", markdown)):
        assert HOW_TO_READ in text
        assert "mean absolute change over 7 test faces (regions from the synthetic generator)" in text
        assert "dlib found no face" not in text
    assert f"![Face regions coloured by importance]({REGION_FIGURE})" in markdown
    alt = 'alt="Face regions coloured by importance"'
    figure = re.search(rf'<figure><img src="data:image/[a-z]+;base64,[^"]+" {alt}>', html)
    assert figure, "the region figure is embedded in the html, not linked"


def test_without_the_csv_there_is_no_region_section(tmp_path: Path) -> None:
    assert read_region_table(tmp_path / "explain" / "region_importance.csv") is None
    markdown, html = rendered(tmp_path)
    assert "Face regions" not in markdown and "Face regions" not in html
    assert HOW_TO_READ not in unescape(html)
