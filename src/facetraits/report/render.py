"""The report as one list of sections, written out as Markdown or as self-contained HTML, plus its bar chart.

Both writers walk the same sections, so the two files cannot disagree on a number, a test or a sentence.
"""

from __future__ import annotations

import base64
import html
import io
import math
import re
from collections.abc import Sequence
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
from facetraits.report.comparison import HUMAN_CEILING, MEAN_ROW
from facetraits.report.statistics import MIN_ATTRIBUTES, HypothesisTest, MethodComparison

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".gif", ".svg", ".webp"})
MISSING = "—"
DECIMALS = 3
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


def number(value: float) -> str:
    return MISSING if math.isnan(value) else f"{value:.{DECIMALS}f}"


def p_value(value: float) -> str:
    """APA style: a p that rounds to zero is shown as a bound, not as 0.000."""
    if math.isnan(value):
        return MISSING
    return f"< {10**-DECIMALS:.{DECIMALS}f}" if value < 10**-DECIMALS else number(value)


def relative_link(title: str, path: str) -> Link:
    """The report travels with its results folder, so every reference must be relative and local."""
    if urlsplit(path).scheme or path.startswith(("/", "\\")):
        raise DataError(f"link {title!r}: {path!r} is not a relative path inside the results folder")
    return Link(title, path)


def scores_table(table: pd.DataFrame) -> TextTable:
    rows = tuple((str(label), *(number(float(v)) for v in values)) for label, values in table.iterrows())
    mean_rows = frozenset(i for i, label in enumerate(table.index) if label == MEAN_ROW)
    header = ("attribute", *map(str, table.columns))
    return TextTable(header, rows, align="l" + "r" * len(table.columns), bold_rows=mean_rows)


def table_notes(table: pd.DataFrame) -> list[str]:
    per_attribute = table.drop(index=MEAN_ROW)
    total = len(per_attribute)
    counts = per_attribute.notna().sum()
    fewer = "; ".join(f"{column}: {count} of {total}" for column, count in counts.items() if count < total)
    notes = [
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


def report_sections(
    table: pd.DataFrame, comparison: MethodComparison, links: Sequence[tuple[str, str]], notes: Sequence[str]
) -> list[Section]:
    sections = []
    if notes:
        sections.append(Section("About this run", (BulletList(tuple(notes)),)))
    sections.append(Section("Test Pearson r per attribute", (scores_table(table), *table_notes(table))))
    sections.append(Section("Statistics", statistics_blocks(comparison)))
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
) -> str:
    parts = [f"# {markdown_text(title)}"]
    for section in report_sections(table, comparison, links, notes):
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
) -> str:
    """One file with inline CSS. With `images` (the folder the links are relative to) it is self-contained: its
    figures are embedded, so it shows them with no network and outside the results folder (MLflow's artifact
    viewer); without, it links them."""
    body = [f"<h1>{html.escape(title)}</h1>"]
    for section in report_sections(table, comparison, links, notes):
        blocks = "\n".join(html_block(block, images) for block in section.blocks)
        body.append(f"<section>\n<h2>{html.escape(section.heading)}</h2>\n{blocks}\n</section>")
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{html.escape(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
        + "\n".join(body)
        + "\n</body>\n</html>\n"
    )


def bar_chart(table: pd.DataFrame, methods: Sequence[str], human: pd.DataFrame | None) -> Figure:
    """Horizontal grouped bars, one group per attribute, so 34 attribute names stay readable.

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
        axes.barh(offsets, scores[method].to_numpy(), height=thickness, label=method)
    if ceiling is not None:
        ceiling = ceiling.loc[order]
        drawn = ceiling.notna().to_numpy()
        axes.vlines(
            ceiling.to_numpy()[drawn], groups[drawn] - 0.45, groups[drawn] + 0.45, colors="black", label="noise ceiling"
        )
    axes.set_yticks(groups, labels=[str(a) for a in scores.index])
    axes.set_ylim(len(scores) - 0.5, -0.5)
    axes.axvline(0.0, color="grey", linewidth=0.8)
    axes.set(xlabel="test Pearson r", title=f"Test r per attribute ({sorted_by})")
    axes.grid(axis="x", alpha=0.3)
    figure.legend(loc="outside lower center", ncols=min(3, count + 1), fontsize="small")
    return figure
