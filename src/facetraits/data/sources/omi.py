"""One Million Impressions (Peterson et al. 2022): means table, aligned images, every single rating."""

from __future__ import annotations

import gzip
import zipfile
from functools import partial
from pathlib import Path

import pandas as pd

from facetraits.config import DataParams
from facetraits.data.sources.base import (
    SourceTable,
    bounded_decompression,
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

SCALE = (0.0, 100.0)
RAW_RATING_FILES = ("attribute_ratings.csv.gz", "attribute_ratings.csv", "attribute_ratings.zip")
RAW_COLUMNS = ("rating", "attribute", "rating_type", "stimulus")
RAW_TYPES = {"stimulus": str, "attribute": str}


def _read_raw_ratings(root: Path) -> tuple[Path, pd.DataFrame] | None:
    for name in RAW_RATING_FILES:
        path = root / name
        if not path.is_file():
            continue
        try:
            if path.suffix == ".zip":
                with zipfile.ZipFile(path) as archive:
                    members = [m for m in archive.namelist() if m.endswith(".csv")]
                    if len(members) != 1:
                        raise DataError(f"{path}: expected one CSV member, found {members}")
                    size = archive.getinfo(members[0]).compress_size
                    member = bounded_decompression(partial(archive.open, members[0]), size, path)
                    return path, read_csv_checked(member, path, dtype=RAW_TYPES)
            if path.suffix == ".gz":
                opened = bounded_decompression(partial(gzip.open, path), path.stat().st_size, path)
                return path, read_csv_checked(opened, path, dtype=RAW_TYPES)
            return path, read_csv_checked(path, path, dtype=RAW_TYPES)
        except (OSError, zipfile.BadZipFile, pd.errors.ParserError, UnicodeDecodeError, EOFError) as exc:
            raise DataError(f"{path}: cannot read raw ratings: {exc}") from None
    return None


def read_omi(params: DataParams) -> SourceTable:
    root = Path(params.path)
    means_file = require_file(resolve_inside(root, params.omi.means, "data.omi.means"), "OMI means table")
    try:
        table = read_csv_checked(means_file, means_file, dtype={"stimulus": str})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DataError(f"{means_file}: cannot parse CSV: {exc}") from None
    require_columns(table, ["stimulus"], means_file)
    rows = sheet_rows()
    ids = unique_ids(table["stimulus"], means_file, rows)
    attributes = select_attributes([c for c in table.columns if c != "stimulus"], params.attributes, means_file)
    means = numeric_ratings(table[list(attributes)], SCALE, means_file, rows)
    images = params.omi.images
    faces = pd.DataFrame(
        {
            "id": ids,
            "source_file": [str(Path(images) / f"{i}.jpg") for i in ids],
            "group": ids,
        }
    )
    for i, source_file in enumerate(faces["source_file"]):
        resolve_inside(root, source_file, f"{means_file} {rows(i)}")
    faces = pd.concat([faces, means.reset_index(drop=True)], axis=1)

    raw = _read_raw_ratings(root)
    ratings = None
    if raw is not None:
        raw_file, raw_table = raw
        require_columns(raw_table, RAW_COLUMNS, raw_file)
        ratings = long_ratings(
            ids=raw_table["stimulus"],
            attributes=raw_table["attribute"],
            ratings=raw_table["rating"],
            known_ids=list(ids),
            wanted=attributes,
            scale=SCALE,
            file=raw_file,
            row_label=sheet_rows(),
            rating_types=raw_table["rating_type"],
        )
    return SourceTable(root=root, faces=faces, attributes=attributes, scale=SCALE, ratings=ratings, square="pad")
