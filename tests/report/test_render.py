import base64
import io
import math
import re
from html import unescape
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import LineCollection
from matplotlib.container import BarContainer
from PIL import Image

from facetraits.errors import DataError
from facetraits.report.comparison import MEAN_ROW, comparison_table
from facetraits.report.intervals import BootstrapSettings, Intervals, bootstrap_intervals
from facetraits.report.render import bar_chart, opening_summary, p_value, render_html, render_markdown
from facetraits.report.statistics import compare_methods

ATTRIBUTES = ["happy", "a|b <c> & d", "sad_face*", "trustworthy", "dominant"]
NASTY_METHOD = "VGG16 <no aug> & | [test]"
LINKS = [("Bar chart", "figures/bar chart.png"), ("Heatmap gallery", "heatmaps/index.html")]
NOTES = ["Data: synthetic faces", "Test faces: 40 <of 200>"]


def sources() -> tuple[pd.DataFrame, dict[str, dict[str, float]]]:
    rng = np.random.default_rng(3)
    human = pd.DataFrame(
        {"reliability": rng.uniform(0.5, 0.95, 5), "ceiling": rng.uniform(0.6, 0.98, 5)}, index=ATTRIBUTES
    )
    methods = {
        "Hand-crafted (LBP+HOG+colour SVR)": dict(zip(ATTRIBUTES, rng.uniform(0.05, 0.3, 5).tolist())),
        "VGG16": dict(zip(ATTRIBUTES, rng.uniform(0.5, 0.8, 5).tolist())),
        NASTY_METHOD: dict(zip(ATTRIBUTES[:4], rng.uniform(-0.2, 0.8, 4).tolist())),
    }
    return human, methods


def expected_cell(human: pd.DataFrame | None, methods: dict[str, dict[str, float]], row: str, column: str) -> float:
    """What the source files say a cell is, computed here without the library."""
    if row == MEAN_ROW:
        values = [expected_cell(human, methods, a, column) for a in ATTRIBUTES]
        return float(np.nanmean(values)) if not all(math.isnan(v) for v in values) else math.nan
    if column == "human reliability":
        return human.loc[row, "reliability"]
    if column == "human ceiling":
        return human.loc[row, "ceiling"]
    if column.endswith(" r/ceiling"):
        return methods[column.removesuffix(" r/ceiling")].get(row, math.nan) / human.loc[row, "ceiling"]
    return methods[column].get(row, math.nan)


def markdown_tables(text: str) -> list[list[list[str]]]:
    """Tables as rows of unescaped cell texts, header first, separator and bold markers dropped."""
    tables, current = [], []
    for line in [*text.splitlines(), ""]:
        if line.startswith("|"):
            cells = re.split(r"(?<!\\)\|", line.strip()[1:-1])
            current.append([re.sub(r"\\(.)", r"\1", c.strip()).removeprefix("**").removesuffix("**") for c in cells])
        elif current:
            tables.append([row for row in current if not set("".join(row)) <= set(":-")])
            current = []
    return tables


class TableParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tables: list[list[list[str]]] = []
        self.in_cell = False

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self.tables[-1][-1].append("")
            self.in_cell = True

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th"):
            self.in_cell = False

    def handle_data(self, data: str) -> None:
        if self.in_cell:
            self.tables[-1][-1][-1] += data


def html_tables(text: str) -> list[list[list[str]]]:
    parser = TableParser()
    parser.feed(text)
    return parser.tables


def report(human: pd.DataFrame | None, methods: dict[str, dict[str, float]]) -> tuple[str, str]:
    table = comparison_table(human, methods, ATTRIBUTES)
    comparison = compare_methods(methods, ATTRIBUTES)
    return (
        render_markdown("Face <traits> & report", table, comparison, LINKS, NOTES),
        render_html("Face <traits> & report", table, comparison, LINKS, NOTES),
    )


def check_numbers(rows: list[list[str]], human: pd.DataFrame | None, methods: dict[str, dict[str, float]]) -> None:
    header, body = rows[0], rows[1:]
    assert [row[0] for row in body] == [*ATTRIBUTES, MEAN_ROW]
    checked = 0
    for row in body:
        assert len(row) == len(header)
        for column, cell in zip(header[1:], row[1:]):
            source = expected_cell(human, methods, row[0], column)
            if math.isnan(source):
                assert cell == "—", (row[0], column)
            else:
                assert float(cell) == round(source, 2), (row[0], column, cell, source)
                assert re.fullmatch(r"-?\d+\.\d{2}", cell)
            checked += 1
    assert checked == len(body) * (len(header) - 1)


@pytest.mark.parametrize("with_human", [True, False])
def test_every_table_cell_is_its_source_value_at_2_decimals_in_both_formats(with_human: bool) -> None:
    human, methods = sources()
    human = human if with_human else None
    markdown, html = report(human, methods)
    md_table, html_table = markdown_tables(markdown)[0], html_tables(html)[0]
    expected_columns = 2 + 2 * len(methods) if with_human else len(methods)
    assert len(md_table[0]) == 1 + expected_columns
    check_numbers(md_table, human, methods)
    assert html_table == md_table


def test_without_human_ratings_both_formats_say_why() -> None:
    _, methods = sources()
    markdown, html = report(None, methods)
    for text, tables in ((markdown, markdown_tables(markdown)), (html, html_tables(html))):
        assert not [column for column in tables[0][0] if "human" in column or "ceiling" in column]
        assert "the data source has no per-rater ratings" in text


def test_mean_row_is_bold_and_its_rule_is_stated() -> None:
    human, methods = sources()
    markdown, html = report(human, methods)
    mean_line = next(line for line in markdown.splitlines() if line.startswith("| **mean**"))
    assert all(cell.strip().startswith("**") for cell in mean_line.strip("|").split(" | "))
    mean_row = re.search(r"<tr class=\"emphasis\">(.*?)</tr>", html).group(1)
    assert mean_row.count("<strong>") == len(html_tables(html)[0][0])
    assert f"fewer than all 5 for {NASTY_METHOD}: 4 of 5; {NASTY_METHOD} r/ceiling: 4 of 5)" in unescape(html)
    rule = "the arithmetic mean of each column over the attributes that have a value there"
    fisher = "r is averaged as it is, not through Fisher z, unlike the parametric tests below."
    for text in (unescape(html), re.sub(r"\\(.)", r"\1", markdown)):
        assert rule in text and fisher in text
    assert "Parametric tests run on Fisher z = artanh(r)" in unescape(html)


def test_statistics_name_every_test_with_its_p_value() -> None:
    human, methods = sources()
    comparison = compare_methods(methods, ATTRIBUTES)
    markdown, html = report(human, methods)
    for tables in (markdown_tables(markdown), html_tables(html)):
        omnibus, pairs = tables[1], tables[2]
        assert omnibus[0][:4] == ["test", "statistic", "df", "p"]
        assert [row[0] for row in omnibus[1:]] == [comparison.anova.test, comparison.friedman.test]
        assert float(omnibus[1][3]) == round(comparison.anova.p_value, 3)
        rows = {(row[0], row[1]): row for row in pairs[1:]}
        assert len(rows) == 2 * len(comparison.pairs)
        for pair in comparison.pairs:
            for test in (pair.t_test, pair.wilcoxon):
                row = rows[(f"{pair.first} vs {pair.second}", test.test)]
                shown = row[pairs[0].index("p")]
                assert (shown == "< 0.001") if test.p_value < 0.001 else (float(shown) == round(test.p_value, 3))
                assert float(row[pairs[0].index("Holm p")]) == round(test.p_holm, 3)


def test_p_values_that_round_to_zero_are_shown_as_a_bound() -> None:
    assert [p_value(p) for p in (0.0004, 0.001, 0.0015, 1.0, math.nan)] == ["< 0.001", "0.001", "0.002", "1.000", "—"]


def results_folder(root: Path) -> Path:
    """LINKS' bar chart as a real figure, wider than an embedded one: a dark left half, a light right half."""
    pixels = np.full((400, 2000, 3), 230, dtype=np.uint8)
    pixels[:, :1000] = (20, 40, 200)
    (root / "figures").mkdir()
    Image.fromarray(pixels).save(root / "figures" / "bar chart.png")
    return root


def embedded_images(html: str) -> list[Image.Image]:
    sources = re.findall(r'<img src="([^"]*)"', html)
    assert all(src.startswith(("data:image/png;base64,", "data:image/jpeg;base64,")) for src in sources), sources
    return [Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))) for src in sources]


def test_html_is_self_contained_and_escapes_names(tmp_path: Path) -> None:
    """Opened alone (MLflow's artifact viewer, a mail) it shows every figure and refers to nothing outside."""
    human, methods = sources()
    table, comparison = comparison_table(human, methods, ATTRIBUTES), compare_methods(methods, ATTRIBUTES)
    html = render_html("Face <traits> & report", table, comparison, LINKS, NOTES, images=results_folder(tmp_path))
    assert not re.search(r"https?://", html)
    assert "<style>" in html and "<link" not in html and "<script" not in html
    assert not re.findall(r'(?:src|href)="(?!data:)', html), "no reference that would break outside the folder"
    assert "a|b &lt;c&gt; &amp; d" in html and "<c>" not in html
    assert "VGG16 &lt;no aug&gt; &amp; | [test]" in html
    assert "<title>Face &lt;traits&gt; &amp; report</title>" in html
    assert "<figcaption>Bar chart</figcaption>" in html and 'alt="Bar chart"' in html
    assert "<p>Heatmap gallery: <code>heatmaps/index.html</code> in the results folder</p>" in html
    assert "<li>Test faces: 40 &lt;of 200&gt;</li>" in html
    (image,) = embedded_images(html)
    assert image.size == (900, 180), "downscaled to the embedded width, aspect kept"
    pixels = np.asarray(image.convert("RGB"), dtype=int)
    assert np.abs(pixels[90, 200] - (20, 40, 200)).max() <= 8 and np.abs(pixels[90, 700] - 230).max() <= 8


def test_html_names_a_missing_figure() -> None:
    human, methods = sources()
    table, comparison = comparison_table(human, methods, ATTRIBUTES), compare_methods(methods, ATTRIBUTES)
    with pytest.raises(DataError, match=r"nowhere/figures/bar chart.png: figure not found"):
        render_html("r", table, comparison, LINKS, NOTES, images=Path("nowhere"))


def test_markdown_embeds_images_links_the_rest_and_escapes_markup() -> None:
    human, methods = sources()
    markdown, _ = report(human, methods)
    assert "![Bar chart](figures/bar%20chart.png)" in markdown
    assert "[Heatmap gallery](heatmaps/index.html)" in markdown and "![Heatmap gallery]" not in markdown
    assert r"a\|b \<c\> \& d" in markdown and r"sad\_face\*" in markdown
    assert markdown.startswith(r"# Face \<traits\> \& report")


def test_html_can_link_images_instead_of_embedding_them() -> None:
    human, methods = sources()
    table, comparison = comparison_table(human, methods, ATTRIBUTES), compare_methods(methods, ATTRIBUTES)
    html = render_html("r", table, comparison, LINKS, NOTES)
    assert "<img" not in html and '<a href="figures/bar%20chart.png">Bar chart</a>' in html
    assert '<a href="heatmaps/index.html">Heatmap gallery</a>' in html


@pytest.mark.parametrize("path", ["https://example.org/x.png", "/abs/x.png", "file:x.html"])
def test_links_outside_the_results_folder_are_rejected(path: str) -> None:
    human, methods = sources()
    table, comparison = comparison_table(human, methods, ATTRIBUTES), compare_methods(methods, ATTRIBUTES)
    with pytest.raises(DataError, match="not a relative path"):
        render_markdown("r", table, comparison, [("x", path)], [])


def test_bar_chart_has_one_bar_group_per_method_sorted_by_ceiling() -> None:
    rng = np.random.default_rng(1)
    attributes = [f"attribute {k}" for k in range(34)]
    human = pd.DataFrame({"reliability": rng.uniform(0.3, 0.9, 34), "ceiling": rng.uniform(0.4, 0.95, 34)}, attributes)
    methods = {m: dict(zip(attributes, rng.uniform(0, 0.7, 34).tolist())) for m in ("hand", "vgg", "vgg noaug")}
    methods["per attribute"] = dict(zip(attributes[:10], rng.uniform(0, 0.7, 10).tolist()))
    table = comparison_table(human, methods, attributes)
    figure = bar_chart(table, list(methods), human)
    axes = figure.axes[0]
    bars = [c for c in axes.containers if isinstance(c, BarContainer)]
    assert [c.get_label() for c in bars] == list(methods)
    order = human["ceiling"].sort_values(ascending=False).index
    assert [label.get_text() for label in axes.get_yticklabels()] == list(order)
    for container, method in zip(bars, methods):
        widths = np.array([patch.get_width() for patch in container.patches])
        np.testing.assert_array_equal(widths, table.loc[order, method].to_numpy())
    ceiling_lines = [c for c in axes.collections if isinstance(c, LineCollection)]
    assert len(ceiling_lines) == 1 and len(ceiling_lines[0].get_segments()) == 34
    assert figure.get_size_inches()[1] > 15
    assert axes.get_title() == "Test r per attribute (sorted by human noise ceiling)"
    figure.savefig(io.BytesIO(), format="png")


def test_bar_chart_without_human_sorts_by_the_best_method() -> None:
    _, methods = sources()
    table = comparison_table(None, methods, ATTRIBUTES)
    figure = bar_chart(table, list(methods), None)
    axes = figure.axes[0]
    assert len([c for c in axes.containers if isinstance(c, BarContainer)]) == len(methods)
    order = table.drop(index=MEAN_ROW)["VGG16"].sort_values(ascending=False).index
    assert [label.get_text() for label in axes.get_yticklabels()] == list(order)
    assert axes.get_title() == "Test r per attribute (sorted by VGG16)"
    assert not [c for c in axes.collections if isinstance(c, LineCollection)]
    with pytest.raises(DataError, match="missing method"):
        bar_chart(table, ["missing method"], None)


def test_bar_chart_without_any_score_keeps_the_attribute_order() -> None:
    human = pd.DataFrame({"reliability": [0.8] * 5, "ceiling": [math.nan] * 5}, index=ATTRIBUTES)
    table = comparison_table(human, {"VGG16": {}, "hand": {}}, ATTRIBUTES)
    figure = bar_chart(table, ["VGG16", "hand"], human)
    axes = figure.axes[0]
    assert [label.get_text() for label in axes.get_yticklabels()] == ATTRIBUTES
    assert axes.get_title() == "Test r per attribute (no scores)"
    # An all-missing ceiling draws no ticks and no legend entry for them.
    assert not [c for c in axes.collections if isinstance(c, LineCollection)]
    assert [text.get_text() for text in figure.legends[0].get_texts()] == ["VGG16", "hand"]
    figure.savefig(io.BytesIO(), format="png")


def with_intervals() -> tuple[pd.DataFrame, dict[str, dict[str, float]], pd.DataFrame, Intervals]:
    """The sources' table with made-up predictions behind it, so every method cell has an interval."""
    human, methods = sources()
    rng = np.random.default_rng(8)
    ratings = rng.normal(size=(120, len(ATTRIBUTES)))
    predictions = {m: ratings + rng.uniform(0.5, 3) * rng.normal(size=ratings.shape) for m in methods}
    scores = {m: {a: float(np.corrcoef(ratings[:, k], p[:, k])[0, 1]) for k, a in enumerate(ATTRIBUTES)}
              for m, p in predictions.items()}  # fmt: skip
    table = comparison_table(human, scores, ATTRIBUTES)
    intervals = bootstrap_intervals(table, ratings, predictions, human["ceiling"], BootstrapSettings(500, 0.95, 4))
    return table, scores, human, intervals


def test_method_cells_carry_their_interval_and_the_summary_its_numbers() -> None:
    table, scores, human, intervals = with_intervals()
    comparison = compare_methods(scores, ATTRIBUTES)
    main, baseline = "VGG16", "Hand-crafted (LBP+HOG+colour SVR)"
    summary = opening_summary(table, intervals, main, [baseline])
    explanation = {"gradcam": {"deletion_auc": 0.700642, "insertion_auc": 0.81234, "randomization_rank_corr": None}}
    content = {"intervals": intervals, "summary": summary, "explanation": explanation}
    markdown = render_markdown("r", table, comparison, LINKS, NOTES, **content)
    html = render_html("r", table, comparison, LINKS, NOTES, **content)
    low, high = intervals.low.loc[MEAN_ROW, main], intervals.high.loc[MEAN_ROW, main]
    mean = f"{table.loc[MEAN_ROW, main]:.2f} [{low:.2f}, {high:.2f}]"
    assert summary.startswith(f"VGG16 reaches a mean test r of {mean}, {table.loc[MEAN_ROW, 'VGG16 r/ceiling']:.0%} of")
    wins = int((table.loc[ATTRIBUTES, main] > table.loc[ATTRIBUTES, baseline]).sum())
    assert f"VGG16 scores higher on {wins} of 5 attributes" in summary
    for tables in (markdown_tables(markdown), html_tables(html)):
        scores_rows = {row[0]: dict(zip(tables[0][0], row)) for row in tables[0][1:]}
        assert scores_rows[MEAN_ROW][main] == mean
        cell = scores_rows["happy"][f"{main} r/ceiling"]
        low, high = intervals.low.loc["happy", f"{main} r/ceiling"], intervals.high.loc["happy", f"{main} r/ceiling"]
        assert cell == f"{table.loc['happy', f'{main} r/ceiling']:.2f} [{low:.2f}, {high:.2f}]"
        assert re.fullmatch(r"\d\.\d\d", scores_rows["happy"]["human ceiling"])
        differences = tables[1]
        assert differences[0][:3] == ["comparison", "attributes", "mean Δr (first − second)"]
        assert len(differences) == 1 + 3
        explained = tables[-1]
        assert explained[1][:3] == ["gradcam", "0.70", "0.81"] and explained[1][3] == "—"
    assert "How to read this" in markdown and "\\`" not in markdown and "0.700642" not in markdown
    assert unescape(html).count("How to read this") == markdown.count("How to read this") == 4
    assert markdown.index("## Summary") < markdown.index("## About this run")


def test_bar_chart_draws_each_interval_as_an_error_bar() -> None:
    table, scores, human, intervals = with_intervals()
    figure = bar_chart(table, list(scores), human, intervals)
    axes = figure.axes[0]
    order = human["ceiling"].sort_values(ascending=False).index
    bars = [c for c in axes.containers if isinstance(c, BarContainer)]
    for container, method in zip(bars, scores):
        (segments,) = [c for c in container.errorbar.lines[2]]
        ends = np.array([[s[0][0], s[1][0]] for s in segments.get_segments()])
        np.testing.assert_allclose(ends[:, 0], intervals.low.loc[order, method])
        np.testing.assert_allclose(ends[:, 1], intervals.high.loc[order, method])
    assert axes.get_title().endswith("; bars: 95% intervals over faces)")
