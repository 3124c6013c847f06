"""The report as one list of sections, written out as Markdown or as self-contained HTML, plus its bar chart.

Both writers walk the same sections, so the two files cannot disagree on a number, a test or a sentence.
"""

from __future__ import annotations

import base64
import html
import io
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import quote, urlsplit

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from PIL import Image, UnidentifiedImageError

from facetraits.errors import DataError
from facetraits.report.comparison import HUMAN_CEILING, MEAN_ROW, ratio_column
from facetraits.report.intervals import Intervals, intervals_note, level_label, separated
from facetraits.report.statistics import MIN_ATTRIBUTES, HypothesisTest, MethodComparison

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".gif", ".svg", ".webp"})
MISSING = "—"
DECIMALS = 2  # an r over a few hundred faces is uncertain in the second decimal (see its interval)
P_DECIMALS = 3
REGION_FIGURE = "explain/region_importance.png"  # relative to results/, as every link of the report
EMBEDDED_WIDTH = 900  # px: an embedded figure is downscaled to this width, so 30-50 figures stay a few MB


@dataclass(frozen=True)
class TextTable:
    """Cells already formatted; `align` holds "l" or "r" per column."""

    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    align: str
    bold_rows: frozenset[int] = frozenset()


@dataclass(frozen=True)
class BulletList:
    items: tuple[str, ...]


@dataclass(frozen=True)
class Link:
    title: str
    path: str

    @property
    def is_image(self) -> bool:
        return PurePosixPath(self.path).suffix.lower() in IMAGE_SUFFIXES

    @property
    def url(self) -> str:
        return quote(self.path, safe="/")


Block = str | TextTable | BulletList | Link


@dataclass(frozen=True)
class Section:
    heading: str
    blocks: tuple[Block, ...]


def number(value: float | None, decimals: int = DECIMALS) -> str:
    return MISSING if value is None or math.isnan(value) else f"{value:.{decimals}f}"


def with_interval(value: float, low: float, high: float) -> str:
    """`0.80 [0.77, 0.83]`; the estimate alone where there is no interval."""
    if math.isnan(value) or math.isnan(low) or math.isnan(high):
        return number(value)
    return f"{number(value)} [{number(low)}, {number(high)}]"


def p_value(value: float) -> str:
    """APA style: a p that rounds to zero is shown as a bound, not as 0.000."""
    if math.isnan(value):
        return MISSING
    return f"< {10**-P_DECIMALS:.{P_DECIMALS}f}" if value < 10**-P_DECIMALS else number(value, P_DECIMALS)


def relative_link(title: str, path: str) -> Link:
    """The report travels with its results folder, so every reference must be relative and local."""
    if urlsplit(path).scheme or path.startswith(("/", "\\")):
        raise DataError(f"link {title!r}: {path!r} is not a relative path inside the results folder")
    return Link(title, path)


def scores_table(table: pd.DataFrame, intervals: Intervals | None = None) -> TextTable:
    low = table * math.nan if intervals is None else intervals.low.reindex_like(table)
    high = table * math.nan if intervals is None else intervals.high.reindex_like(table)
    rows = tuple(
        (str(label), *(with_interval(float(v), float(lo), float(hi)) for v, lo, hi in zip(values, low.loc[label],
                                                                                           high.loc[label])))
        for label, values in table.iterrows()
    )  # fmt: skip
    mean_rows = frozenset(i for i, label in enumerate(table.index) if label == MEAN_ROW)
    header = ("attribute", *map(str, table.columns))
    return TextTable(header, rows, align="l" + "r" * len(table.columns), bold_rows=mean_rows)


def table_notes(table: pd.DataFrame, intervals: Intervals | None = None) -> list[str]:
    per_attribute = table.drop(index=MEAN_ROW)
    total = len(per_attribute)
    counts = per_attribute.notna().sum()
    fewer = "; ".join(f"{column}: {count} of {total}" for column, count in counts.items() if count < total)
    notes = [
        "How to read this: each cell is the Pearson r between a method's predictions and the mean human rating on "
        "the test faces (1 = the same order, 0 = no relation)"
        + (", with the range it could plausibly take on another sample of faces in brackets." if intervals else ".")
    ]
    if intervals is not None:
        notes.append(intervals_note(intervals, HUMAN_CEILING in table.columns))
    notes += [
        "Mean row: the arithmetic mean of each column over the attributes that have a value there "
        + (f"(fewer than all {total} for {fewer})" if fewer else f"(all {total} attributes)")
        + "; r is averaged as it is, not through Fisher z, unlike the parametric tests below."
    ]
    if HUMAN_CEILING in table.columns:
        notes.append(
            "Human reliability and ceiling come from the raw per-rater ratings; the ceiling is the highest r a model "
            'can expect against noisy mean ratings. "r/ceiling" is a method\'s r divided by the ceiling (missing '
            "where the ceiling is missing or not positive); its mean row averages the per-attribute ratios."
        )
    else:
        notes.append(
            "No human reliability, noise ceiling or r/ceiling columns: the data source has no per-rater ratings, "
            "so agreement between raters cannot be estimated."
        )
    return notes


def degrees_of_freedom(test: HypothesisTest) -> str:
    return ", ".join(map(str, test.df))


def statistics_blocks(comparison: MethodComparison) -> tuple[Block, ...]:
    shared = len(comparison.attributes)
    blocks: list[Block] = [
        "How to read this: do the methods differ across the attribute set (each attribute one observation, its r "
        "taken as exact)? A small p says the methods' r differ more than attributes vary; the intervals above "
        "answer the same question on faces, for each attribute.",
        (
            "Attributes are the observations. Parametric tests run on Fisher z = artanh(r) because r is bounded "
            f"and skewed; rank tests run on r. Omnibus tests use the {shared} attribute(s) every method has; each "
            f"pair uses the attributes both methods have (at least {MIN_ATTRIBUTES} needed). Paired p-values are "
            "Holm-corrected across pairs, separately for each test."
        ),
        TextTable(
            header=("test", "statistic", "df", "p", "attributes", "note"),
            rows=tuple(
                (t.test, number(t.statistic), degrees_of_freedom(t), p_value(t.p_value), str(shared), t.reason)
                for t in (comparison.anova, comparison.friedman)
            ),
            align="lrrrrl",
        ),
    ]
    if not comparison.pairs:
        blocks.append("No paired tests: fewer than two methods.")
        return tuple(blocks)
    rows = []
    for pair in comparison.pairs:
        for test in (pair.t_test, pair.wilcoxon):
            rows.append(
                (
                    f"{pair.first} vs {pair.second}",
                    test.test,
                    str(pair.n),
                    number(pair.mean_difference),
                    number(test.statistic),
                    degrees_of_freedom(test),
                    p_value(test.p_value),
                    p_value(math.nan if test.p_holm is None else test.p_holm),
                    test.reason,
                )
            )
    blocks.append(
        TextTable(
            header=(
                "comparison",
                "test",
                "attributes",
                "mean Δr (first − second)",
                "statistic",
                "df",
                "p",
                "Holm p",
                "note",
            ),
            rows=tuple(rows),
            align="llrrrrrrl",
        )
    )
    return tuple(blocks)


def difference_blocks(intervals: Intervals) -> tuple[Block, ...]:
    """Paired over faces: the question a reader asks of two methods is answered on the faces, not the attributes."""
    level = level_label(intervals.settings)
    rows = tuple(
        (
            f"{row.first} vs {row.second}",
            f"{row.attributes}",
            with_interval(row.difference, row.low, row.high),
            str(row.first_better),
            str(row.second_better),
        )
        for row in separated(intervals.differences).itertuples()
    )
    return (
        f"How to read this: Δr is the first method's r minus the second's, on the same resampled test faces; an "
        f"interval that excludes 0 says the difference would hold on another sample of faces ({level} level, not "
        "corrected across attributes). The last two columns count the attributes whose interval lies above or "
        "below 0.",
        TextTable(
            header=("comparison", "attributes", "mean Δr (first − second)", "first higher", "second higher"),
            rows=rows,
            align="lrrrr",
        ),
    )


EXPLANATION_COLUMNS = {
    "deletion_auc": "deletion AUC (lower is better)",
    "insertion_auc": "insertion AUC (higher is better)",
    "randomization_rank_corr": "randomization rank r (lower is better)",
    "randomization_p": "randomization test p",
    "mass_accuracy": "relevance mass accuracy",
    "rank_accuracy": "relevance rank accuracy",
    "region_mass_accuracy": "mass in the top occlusion region",
}


def _explanation_cell(values: Mapping[str, float | None], key: str) -> str:
    def get(name: str) -> float:
        value = values.get(name)
        return math.nan if value is None else float(value)

    if key == "randomization_p":
        return MISSING if math.isnan(get(key)) else p_value(get(key))
    return with_interval(get(key), get(f"{key}_ci_low"), get(f"{key}_ci_high"))


def explanation_blocks(scores: Mapping[str, Mapping[str, float | None]]) -> tuple[Block, ...]:
    """Each attribution method's scores, averaged over attributes (scores.json's `mean`), with their bootstrap
    intervals over the scored faces."""
    shown = [key for key in EXPLANATION_COLUMNS if any(key in values for values in scores.values())]
    rows = tuple(
        (method.replace("_", " "), *(_explanation_cell(values, k) for k in shown)) for method, values in scores.items()
    )
    return (
        "How to read this: deletion / insertion AUC track the prediction as the pixels a map ranks first are "
        "removed / restored (a faithful map: low deletion, high insertion); the randomization rank r compares "
        "the map with that of a model whose top layers were re-initialized (a map that depends on what the model "
        "learned changes: low r), and its test p (one-sided Wilcoxon over every scored face) is small when the "
        "maps do change; relevance accuracy (synthetic faces only) is the share of relevance inside the regions "
        "the attribute is drawn from; the mass in the top occlusion region is the share inside the face region whose "
        "occlusion moves the model's prediction most (per attribute: explain/scores.json's top_region; compare it "
        "with that region's share of the image, its reference region_mask_area_fraction). Means over attributes, "
        "each with its bootstrap interval over the scored faces; per-attribute values are in explain/scores.json.",
        TextTable(header=("method", *(EXPLANATION_COLUMNS[k] for k in shown)), rows=rows, align="l" + "r" * len(shown)),
    )


def region_blocks(table: pd.DataFrame) -> tuple[Block, ...]:
    """Mean importance of each face region per model and attribute (explain/region_importance.csv), and its figure."""
    regions = list(dict.fromkeys(table["region"]))
    rows = tuple(
        (str(model), str(attribute), *(number(v) for v in group.set_index("region")["importance"].reindex(regions)))
        for (model, attribute), group in table.groupby(["model", "attribute"], sort=False)
    )
    first = table.iloc[0]
    undetected = f" dlib found no face in {first['undetected']} of them (regions in the whole image)." if first[
        "undetected"] else ""  # fmt: skip
    return (
        "How to read this: each region of the face is replaced in turn by explain.baseline (by default the blurred "
        "face) and the prediction's change is measured in standard deviations of the attribute's training ratings; a cell "
        f"is the mean absolute change over {first['faces']} test faces (regions from the {first['regions_from']})."
        f"{undetected} A large value: the model relies on that region (larger regions remove more pixels; their "
        "areas, intervals and signed means are in explain/region_importance.csv).",
        TextTable(header=("model", "attribute", *(r.replace("_", "/") for r in regions)), rows=rows,
                  align="ll" + "r" * len(regions)),  # fmt: skip
        relative_link("Face regions coloured by importance", REGION_FIGURE),
    )


def opening_summary(table: pd.DataFrame, intervals: Intervals | None, main: str, others: Sequence[str]) -> str:
    """The study's finding in a sentence, generated from the table and intervals so it cannot drift from them."""

    def mean_r(method: str) -> str:
        if intervals is None:
            return number(table.loc[MEAN_ROW, method])
        low, high = intervals.low.loc[MEAN_ROW, method], intervals.high.loc[MEAN_ROW, method]
        return with_interval(table.loc[MEAN_ROW, method], low, high)

    opening = f"{main} reaches a mean test r of {mean_r(main)}"
    ratio = ratio_column(main)
    if ratio in table.columns and not math.isnan(table.loc[MEAN_ROW, ratio]):
        opening += f", {table.loc[MEAN_ROW, ratio]:.0%} of the human noise ceiling"
    clauses = [opening]
    pairs = None if intervals is None else separated(intervals.differences)
    for other in others:
        shared = table.drop(index=MEAN_ROW)[[main, other]].dropna()
        clause = f"{other} reaches {mean_r(other)}; {main} scores higher on {int((shared[main] > shared[other]).sum())}"
        clause += f" of {len(shared)} attributes"
        if pairs is not None:
            row = pairs[(pairs["first"] == main) & (pairs["second"] == other)]
            higher, lower, sign = "first_better", "second_better", 1.0
            if row.empty:  # pairs follow the table's column order: the main model may come second
                row = pairs[(pairs["first"] == other) & (pairs["second"] == main)]
                higher, lower, sign = "second_better", "first_better", -1.0
            if not row.empty:
                row = row.iloc[0]
                low, high = sorted((sign * row["low"], sign * row["high"]))
                clause += (
                    f" ({row[higher]} with an interval of the difference above 0, {row[lower]} below), by "
                    f"{with_interval(sign * row['difference'], low, high)} in mean r"
                )
        clauses.append(clause)
    level = f" Brackets: {level_label(intervals.settings)} bootstrap intervals over test faces." if intervals else ""
    return "; ".join(clauses) + "." + level


def report_sections(
    table: pd.DataFrame,
    comparison: MethodComparison,
    links: Sequence[tuple[str, str]],
    notes: Sequence[str],
    intervals: Intervals | None = None,
    summary: str = "",
    explanation: Mapping[str, Mapping[str, float | None]] | None = None,
    regions: pd.DataFrame | None = None,
) -> list[Section]:
    sections = []
    if summary:
        sections.append(Section("Summary", (summary,)))
    if notes:
        sections.append(Section("About this run", (BulletList(tuple(notes)),)))
    sections.append(
        Section("Test Pearson r per attribute", (scores_table(table, intervals), *table_notes(table, intervals)))
    )
    if intervals is not None and not intervals.differences.empty:
        sections.append(Section("Differences between methods over faces", difference_blocks(intervals)))
    sections.append(Section("Statistics across attributes", statistics_blocks(comparison)))
    if explanation:
        sections.append(Section("Attribution maps", explanation_blocks(explanation)))
    if regions is not None and not regions.empty:
        sections.append(Section("Face regions", region_blocks(regions)))
    if links:
        sections.append(Section("Figures", tuple(relative_link(title, path) for title, path in links)))
    return sections


MARKDOWN_SPECIAL = re.compile(r"([\\`*_\[\]<>|&~#])")


def markdown_text(text: str) -> str:
    """Backslash-escape the characters that would turn an attribute or method name into markup or a table cell."""
    return MARKDOWN_SPECIAL.sub(r"\\\1", " ".join(text.split()))


def markdown_block(block: Block) -> str:
    if isinstance(block, str):
        return markdown_text(block)
    if isinstance(block, BulletList):
        return "\n".join(f"- {markdown_text(item)}" for item in block.items)
    if isinstance(block, Link):
        if block.is_image:
            return f"### {markdown_text(block.title)}\n\n![{markdown_text(block.title)}]({block.url})"
        return f"[{markdown_text(block.title)}]({block.url})"

    def row(cells: Sequence[str], bold: bool) -> str:
        texts = (markdown_text(c) for c in cells)
        return "| " + " | ".join(f"**{t}**" if bold and t else t for t in texts) + " |"

    separator = "|" + "|".join(":--" if a == "l" else "--:" for a in block.align) + "|"
    body = [row(cells, i in block.bold_rows) for i, cells in enumerate(block.rows)]
    return "\n".join([row(block.header, False), separator, *body])


def render_markdown(
    title: str,
    table: pd.DataFrame,
    comparison: MethodComparison,
    links: Sequence[tuple[str, str]],
    notes: Sequence[str],
    intervals: Intervals | None = None,
    summary: str = "",
    explanation: Mapping[str, Mapping[str, float | None]] | None = None,
    regions: pd.DataFrame | None = None,
) -> str:
    parts = [f"# {markdown_text(title)}"]
    for section in report_sections(table, comparison, links, notes, intervals, summary, explanation, regions):
        parts.append(f"## {markdown_text(section.heading)}")
        parts.extend(markdown_block(block) for block in section.blocks)
    return "\n\n".join(parts) + "\n"


CSS = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 80rem; padding: 0 1rem; color: #222; }
table { border-collapse: collapse; margin: 1rem 0; font-size: 0.9rem; }
th, td { border-bottom: 1px solid #ddd; padding: 0.25rem 0.6rem; vertical-align: top; }
thead th { border-bottom: 2px solid #444; }
.l { text-align: left; }
.r { text-align: right; font-variant-numeric: tabular-nums; }
tr.emphasis { background: #f3f3f3; }
figure { margin: 1rem 0; }
img { max-width: 100%; }
"""


def data_uri(path: Path, max_width: int = EMBEDDED_WIDTH) -> str:
    """The image as a `data:` URI, downscaled to `max_width`: the HTML then shows it where no relative path
    resolves (MLflow's artifact viewer, a mail). PNG for figures of flat colour, JPEG when that is smaller
    (photographs, heatmaps); an SVG as it is."""
    try:
        if path.suffix.lower() == ".svg":
            return f"data:image/svg+xml;base64,{base64.b64encode(path.read_bytes()).decode('ascii')}"
        with Image.open(path) as opened:
            image = opened.convert("RGB")
    except FileNotFoundError:
        raise DataError(f"{path}: figure not found; rerun the stage that draws it (dvc repro)") from None
    except (UnidentifiedImageError, OSError) as exc:
        raise DataError(f"{path}: not a readable image ({exc})") from None
    if image.width > max_width:
        image = image.resize((max_width, round(image.height * max_width / image.width)), Image.Resampling.LANCZOS)
    encoded = {}
    for kind, options in (("png", {"optimize": True}), ("jpeg", {"quality": 85})):
        buffer = io.BytesIO()
        image.save(buffer, format=kind, **options)
        encoded[kind] = buffer.getvalue()
    kind = min(encoded, key=lambda k: len(encoded[k]))
    return f"data:image/{kind};base64,{base64.b64encode(encoded[kind]).decode('ascii')}"


def html_block(block: Block, images: Path | None) -> str:
    """`images`: the folder the links are relative to, whose images are embedded; None links every file."""
    escape = html.escape
    if isinstance(block, str):
        return f"<p>{escape(block)}</p>"
    if isinstance(block, BulletList):
        return "<ul>\n" + "\n".join(f"<li>{escape(item)}</li>" for item in block.items) + "\n</ul>"
    if isinstance(block, Link):
        if images is None:
            return f'<p><a href="{escape(block.url)}">{escape(block.title)}</a></p>'
        if block.is_image:
            return (
                f'<figure><img src="{data_uri(images / block.path)}" alt="{escape(block.title)}">'
                f"<figcaption>{escape(block.title)}</figcaption></figure>"
            )
        # a link to another file would be dead wherever the report travels alone: name the file instead
        return f"<p>{escape(block.title)}: <code>{escape(block.path)}</code> in the results folder</p>"

    def cell(tag: str, text: str, align: str, bold: bool, scope: str = "") -> str:
        content = f"<strong>{escape(text)}</strong>" if bold and text else escape(text)
        return f'<{tag}{scope} class="{align}">{content}</{tag}>'

    header = "".join(cell("th", text, a, False) for text, a in zip(block.header, block.align))
    body = []
    for i, cells in enumerate(block.rows):
        bold = i in block.bold_rows
        label = cell("th", cells[0], block.align[0], bold, scope=' scope="row"')
        rest = "".join(cell("td", text, a, bold) for text, a in zip(cells[1:], block.align[1:]))
        row_class = ' class="emphasis"' if bold else ""
        body.append(f"<tr{row_class}>{label}{rest}</tr>")
    return "<table>\n<thead><tr>" + header + "</tr></thead>\n<tbody>\n" + "\n".join(body) + "\n</tbody>\n</table>"


def render_html(
    title: str,
    table: pd.DataFrame,
    comparison: MethodComparison,
    links: Sequence[tuple[str, str]],
    notes: Sequence[str],
    images: Path | None = None,
    intervals: Intervals | None = None,
    summary: str = "",
    explanation: Mapping[str, Mapping[str, float | None]] | None = None,
    regions: pd.DataFrame | None = None,
) -> str:
    """One file with inline CSS. With `images` (the folder the links are relative to) it is self-contained: its
    figures are embedded, so it shows them with no network and outside the results folder (MLflow's artifact
    viewer); without, it links them."""
    body = [f"<h1>{html.escape(title)}</h1>"]
    for section in report_sections(table, comparison, links, notes, intervals, summary, explanation, regions):
        blocks = "\n".join(html_block(block, images) for block in section.blocks)
        body.append(f"<section>\n<h2>{html.escape(section.heading)}</h2>\n{blocks}\n</section>")
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{html.escape(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
        + "\n".join(body)
        + "\n</body>\n</html>\n"
    )


def bar_chart(
    table: pd.DataFrame, methods: Sequence[str], human: pd.DataFrame | None, intervals: Intervals | None = None
) -> Figure:
    """Horizontal grouped bars, one group per attribute, so 34 attribute names stay readable; with `intervals`,
    each bar has its interval as an error bar.

    Groups are sorted by the human noise ceiling (drawn as a black tick across each group) when there is one,
    else by the method with the highest mean r; the best-reproduced attributes are at the top. Without any
    score the attributes keep their order.
    """
    missing = [m for m in methods if m not in table.columns]
    if missing:
        raise DataError(f"method(s) {missing} have no column in the comparison table")
    scores = table.drop(index=MEAN_ROW, errors="ignore")[list(methods)]
    ceiling = None if human is None else human["ceiling"].reindex(scores.index).astype(np.float64)
    if ceiling is not None and ceiling.isna().all():
        ceiling = None
    means = scores.mean()
    if ceiling is not None:
        key, sorted_by = ceiling, "sorted by human noise ceiling"
    elif means.notna().any():
        key, sorted_by = scores[means.idxmax()], f"sorted by {means.idxmax()}"
    else:
        key, sorted_by = None, "no scores"
    order = scores.index if key is None else key.sort_values(ascending=False, na_position="last").index
    scores = scores.loc[order]
    count, groups = len(methods), np.arange(len(scores))
    figure = Figure(figsize=(8, max(3.0, 1.5 + len(scores) * (0.12 + 0.14 * max(count, 1)))), layout="constrained")
    axes = figure.subplots()
    thickness = 0.8 / max(count, 1)
    for k, method in enumerate(methods):
        offsets = groups - 0.4 + thickness * (k + 0.5)
        values = scores[method].to_numpy()
        errors = None
        if intervals is not None:
            low, high = (bound.loc[order, method].to_numpy() for bound in (intervals.low, intervals.high))
            errors = np.nan_to_num(np.stack([values - low, high - values]), nan=0.0)
        axes.barh(offsets, values, height=thickness, label=method, xerr=errors, error_kw={"elinewidth": 0.8})
    if ceiling is not None:
        ceiling = ceiling.loc[order]
        drawn = ceiling.notna().to_numpy()
        axes.vlines(
            ceiling.to_numpy()[drawn], groups[drawn] - 0.45, groups[drawn] + 0.45, colors="black", label="noise ceiling"
        )
    axes.set_yticks(groups, labels=[str(a) for a in scores.index])
    axes.set_ylim(len(scores) - 0.5, -0.5)
    axes.axvline(0.0, color="grey", linewidth=0.8)
    interval = f"; bars: {level_label(intervals.settings)} intervals over faces" if intervals is not None else ""
    axes.set(xlabel="test Pearson r", title=f"Test r per attribute ({sorted_by}{interval})")
    axes.grid(axis="x", alpha=0.3)
    figure.legend(loc="outside lower center", ncols=min(3, count + 1), fontsize="small")
    return figure
