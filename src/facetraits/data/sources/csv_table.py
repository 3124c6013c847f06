"""Any CSV with an image-path column and numeric attribute columns, plus optional long raw ratings."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from facetraits.config import DataParams
from facetraits.data.sources.base import (
    SourceTable,
    long_ratings,
    numeric_ratings,
    read_csv_checked,
    require_columns,
    require_file,
    resolve_inside,
    select_attributes,
    sheet_rows,
    unique_ids,
)
from facetraits.errors import DataError

RAW_COLUMNS = ("image", "attribute", "rating")


def _read_csv(path: Path) -> pd.DataFrame:
    try:
        return read_csv_checked(path, path, dtype=str)
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as exc:
        raise DataError(f"{path}: cannot parse CSV: {exc}") from None


def read_csv_source(params: DataParams) -> SourceTable:
    root = Path(params.path)
    settings = params.csv
    table_file = require_file(resolve_inside(root, settings.table, "data.csv.table"), "faces table")
    table = _read_csv(table_file)
    key_columns = [c for c in (settings.image_column, settings.id_column, settings.group_column) if c is not None]
    require_columns(table, key_columns, table_file)
    rows = sheet_rows()
    images = table[settings.image_column].fillna("").str.strip()
    first_row: dict[Path, int] = {}
    for i, image in enumerate(images):
        if not image:
            raise DataError(f"{table_file} {rows(i)}: empty image path in column '{settings.image_column}'")
        resolved = resolve_inside(root, image, f"{table_file} {rows(i)}")
        if resolved in first_row:  # one face counted twice, e.g. `a.png` and `./a.png` under two ids
            raise DataError(
                f"{table_file}: column '{settings.image_column}': {rows(first_row[resolved])} and {rows(i)} "
                f"name the same image file {image!r}"
            )
        first_row[resolved] = i
    ids = unique_ids(table[settings.id_column] if settings.id_column else images, table_file, rows)
    groups = table[settings.group_column].astype(str) if settings.group_column else ids
    attributes = select_attributes([c for c in table.columns if c not in key_columns], params.attributes, table_file)
    means = numeric_ratings(table[list(attributes)], settings.rating_range, table_file, rows)
    faces = pd.concat(
        [pd.DataFrame({"id": ids, "source_file": images, "group": groups}), means.reset_index(drop=True)], axis=1
    )
    ratings = None
    if settings.ratings is not None:
        ratings_file = require_file(resolve_inside(root, settings.ratings, "data.csv.ratings"), "raw ratings file")
        raw = _read_csv(ratings_file)
        require_columns(raw, RAW_COLUMNS, ratings_file)
        image_to_id = dict(zip(images, ids, strict=True))
        raw_ids = raw["image"].str.strip().map(image_to_id).fillna(raw["image"])
        ratings = long_ratings(
            ids=raw_ids,
            attributes=raw["attribute"],
            ratings=raw["rating"],
            known_ids=list(ids),
            wanted=attributes,
            scale=settings.rating_range,
            file=ratings_file,
            row_label=sheet_rows(),
            raters=raw["rater"] if "rater" in raw.columns else None,
        )
    return SourceTable(
        root=root, faces=faces, attributes=attributes, scale=settings.rating_range, ratings=ratings, square="pad"
    )
