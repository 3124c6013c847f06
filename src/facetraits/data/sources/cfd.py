"""Chicago Face Database (Ma et al. 2015): norming spreadsheet with a multi-row header, images per target.

Every target has a neutral image (a missing one is a bad image); other expressions exist for some
targets only, so a requested expression a target lacks is simply not there.
"""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path

import pandas as pd

from facetraits.config import DataParams
from facetraits.data.sources.base import (
    NA_OPTIONS,
    SourceTable,
    numeric_ratings,
    refuse_repeated_columns,
    require_file,
    resolve_inside,
    select_attributes,
    sheet_rows,
    unique_ids,
)
from facetraits.errors import DataError

SCALE = (1.0, 7.0)
ID_HEADERS = ("Target", "Model")
RATING_COLUMNS = (
    "Afraid", "Angry", "Attractive", "Babyface", "Babyfaced", "Disgusted", "Dominant", "Feminine", "Happy",
    "Masculine", "Prototypic", "Sad", "Suitability", "Surprised", "Threatening", "Trustworthy", "Unusual",
)  # fmt: skip
HEADER_SEARCH_ROWS = 20
IMAGE_NAME = re.compile(r"^CFD-(?P<target>[A-Z]{2}-\d+)-\d+-(?P<expression>N|HC|HO|A|F)\.jpe?g$", re.IGNORECASE)


def _norming_sheet(path: Path, sheet: str | None) -> tuple[str, pd.DataFrame]:
    try:
        workbook = pd.ExcelFile(path)
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: cannot open workbook: {exc}") from None
    if sheet is None:
        norming = [name for name in workbook.sheet_names if "norming data" in name.lower()]
        if not norming:
            raise DataError(f"{path}: no sheet named like 'Norming Data' in {workbook.sheet_names}; set data.cfd.sheet")
        sheet = norming[0]
    elif sheet not in workbook.sheet_names:
        raise DataError(f"{path}: no sheet {sheet!r} (data.cfd.sheet); sheets: {workbook.sheet_names}")
    return sheet, pd.read_excel(workbook, sheet_name=sheet, header=None, **NA_OPTIONS)


def _header_row(grid: pd.DataFrame, where: str) -> int:
    """The row of column names, found by its id column: CFD versions differ (codes above it in v3.0)."""
    for row in range(min(HEADER_SEARCH_ROWS, len(grid))):
        cells = {str(v).strip() for v in grid.iloc[row].tolist()}
        if cells & set(ID_HEADERS):
            return row
    raise DataError(f"{where}: no header row with a {' or '.join(ID_HEADERS)} column in the first {HEADER_SEARCH_ROWS} rows")


def _image_index(images_dir: Path) -> dict[tuple[str, str], list[Path]]:
    index: dict[tuple[str, str], list[Path]] = defaultdict(list)
    for path in sorted(images_dir.rglob("*")):
        match = IMAGE_NAME.match(path.name)
        if match:
            index[(match["target"].upper(), match["expression"].upper())].append(path)
    return index


def read_cfd(params: DataParams) -> SourceTable:
    root = Path(params.path)
    settings = params.cfd
    table_file = require_file(resolve_inside(root, settings.table, "data.cfd.table"), "norming spreadsheet")
    sheet, grid = _norming_sheet(table_file, settings.sheet)
    where = Path(f"{table_file} sheet {sheet!r}")
    header = _header_row(grid, str(where))
    columns = [str(v).strip() for v in grid.iloc[header].tolist()]
    id_column = next(c for c in columns if c in ID_HEADERS)
    body = grid.iloc[header + 1 :].set_axis(columns, axis=1)
    target_cells = body[id_column].astype("string").str.strip()
    body = body.loc[target_cells.notna() & (target_cells != "") & target_cells.str.match(r"^[A-Za-z]{2}-\d+$")]
    rows = sheet_rows(1, body.index.to_numpy())
    body = body.reset_index(drop=True)
    targets = unique_ids(body[id_column], where, rows)
    rating_columns = [c for c in RATING_COLUMNS if c in columns]
    available = rating_columns if params.attributes == "all" else [c for c in columns if c != id_column]
    attributes = select_attributes(available, params.attributes, where)
    refuse_repeated_columns([c for c in columns if c in (id_column, *attributes)], where)
    means = numeric_ratings(body[list(attributes)], SCALE, where, rows).reset_index(drop=True)

    images_dir = resolve_inside(root, settings.images, "data.cfd.images")
    if not images_dir.is_dir():
        raise DataError(f"{images_dir}: CFD images folder not found (data.cfd.images)")
    index = _image_index(images_dir)
    records = []
    for i, target in enumerate(targets):
        for expression in settings.expressions:
            found = index.get((target.upper(), expression), [])
            if not found and expression == "N":
                expected = Path(settings.images) / target / f"CFD-{target}-*-{expression}.jpg"
                records.append((f"CFD-{target}-{expression}", str(expected), target, i))
            for path in found:
                records.append((path.stem, str(path.relative_to(root.resolve())), target, i))
    faces = pd.DataFrame(records, columns=["id", "source_file", "group", "row"])
    unique_ids(faces["id"], images_dir, lambda i: faces["source_file"].iloc[i])
    faces = pd.concat(
        [faces.drop(columns="row"), means.iloc[faces["row"].to_numpy()].reset_index(drop=True)], axis=1
    )
    return SourceTable(root=root, faces=faces, attributes=attributes, scale=SCALE, ratings=None, square="crop")
