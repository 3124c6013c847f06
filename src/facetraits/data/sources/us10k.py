"""10k US Adult Faces Database (Bainbridge et al. 2013), read as the paper reads it."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from facetraits.config import DataParams
from facetraits.data.sources.base import (
    NA_OPTIONS,
    SourceTable,
    long_ratings,
    numeric_ratings,
    read_csv_checked,
    refuse_repeated_columns,
    require_file,
    resolve_inside,
    select_attributes,
    sheet_rows,
    unique_ids,
)
from facetraits.errors import DataError

SCALE = (1.0, 9.0)
FILENAME_COLUMN = "Filename"
# Rater columns repeat once per survey version; pandas reads the repeats as `catch.1`, `subage.1`, ...
NOT_ATTRIBUTES = ("Image #", "catch", "catchAns", "subage", "submale", "subrace")


def read_sheet(path: Path, sheet: str | None) -> pd.DataFrame:
    """A CSV, or one sheet of a workbook; errors name the file and sheet. Only rater columns may repeat."""
    try:
        if path.suffix.lower() in (".xlsx", ".xlsm", ".xls"):
            name = sheet if sheet is not None else 0
            header = pd.read_excel(path, sheet_name=name, header=None, nrows=1).iloc[0].tolist()
            refuse_repeated_columns(header, f"{path} sheet {sheet!r}", may_repeat=NOT_ATTRIBUTES)
            return pd.read_excel(path, sheet_name=name, **NA_OPTIONS)
        return read_csv_checked(path, path, may_repeat=NOT_ATTRIBUTES)
    except ValueError as exc:
        raise DataError(f"{path}: cannot read sheet {sheet!r}: {exc}") from None
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, IndexError) as exc:
        raise DataError(f"{path}: cannot read table: {exc}") from None


def _is_attribute_column(column: str, filename: str) -> bool:
    return column != filename and re.sub(r"\.\d+$", "", column) not in NOT_ATTRIBUTES


def _raw_ratings(path: Path, sheet: str, attributes: tuple[str, ...], ids: list[str]) -> pd.DataFrame:
    """'All Data' holds one row per response sheet (one rater of each survey version) and image."""
    table = read_sheet(path, sheet)
    filename = FILENAME_COLUMN if FILENAME_COLUMN in table.columns else table.columns[0]
    missing = [a for a in attributes if a not in table.columns]
    if missing:
        raise DataError(f"{path} sheet {sheet!r}: no raw-rating column for attribute(s) {missing}")
    long = (
        table[[filename, *attributes]]
        .rename(columns={filename: "id"})
        .assign(row=table.index)
        .melt(id_vars=["id", "row"], var_name="attribute", value_name="rating")
        .dropna(subset=["rating"])
    )
    return long_ratings(
        ids=long["id"],
        attributes=long["attribute"],
        ratings=long["rating"],
        known_ids=ids,
        wanted=attributes,
        scale=SCALE,
        file=Path(f"{path} sheet {sheet!r}"),
        row_label=sheet_rows(2, long["row"].to_numpy()),
    )


def read_us10k(params: DataParams) -> SourceTable:
    root = Path(params.path)
    settings = params.us10k
    table_file = require_file(resolve_inside(root, settings.table, "data.us10k.table"), "attribute spreadsheet")
    is_workbook = table_file.suffix.lower() in (".xlsx", ".xlsm", ".xls")
    table = read_sheet(table_file, settings.sheet if is_workbook else None)
    where = Path(f"{table_file} sheet {settings.sheet!r}") if is_workbook else table_file
    filename = FILENAME_COLUMN if FILENAME_COLUMN in table.columns else table.columns[0]
    rows = sheet_rows()
    ids = unique_ids(table[filename], where, rows)
    available = [c for c in table.columns if _is_attribute_column(str(c), filename)]
    attributes = select_attributes(available, params.attributes, where)
    means = numeric_ratings(table[list(attributes)], SCALE, where, rows)
    source_files = [str(Path(settings.images) / name) for name in ids]
    for i, source_file in enumerate(source_files):
        resolve_inside(root, source_file, f"{where} {rows(i)}")
    faces = pd.concat(
        [pd.DataFrame({"id": ids, "source_file": source_files, "group": ids}), means.reset_index(drop=True)], axis=1
    )
    ratings = None
    if is_workbook and settings.ratings_sheet in pd.ExcelFile(table_file).sheet_names:
        ratings = _raw_ratings(table_file, settings.ratings_sheet, attributes, list(ids))
    return SourceTable(root=root, faces=faces, attributes=attributes, scale=SCALE, ratings=ratings, square="pad")
