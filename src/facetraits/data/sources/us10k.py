"""10k US Adult Faces Database (Bainbridge et al. 2013), read as the paper reads it."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from facetraits.config import DataParams, Us10kParams
from facetraits.data.sources.base import (
    NA_OPTIONS,
    SourceTable,
    compact_ratings,
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
MEMORABILITY = "memorability"  # the target's attribute name (the trait sheet's `memorable` is a rating, not this)
RATE = (0.0, 1.0)
MEMORABILITY_SCALES = {"hit_rate": RATE, "corrected_hit_rate": (-1.0, 1.0)}
# HR as stored may be rounded: farther than this from hits / (hits + misses) means the columns do not belong together
HIT_RATE_TOLERANCE = 0.005
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


def _memorability_column(table: pd.DataFrame, name: str, key: str, where: Path, counts: bool = False) -> pd.Series:
    if name not in table.columns:
        fix = " or null when the sheet has no counts (no per-trial ratings, no ceiling)" if counts else ""
        raise DataError(
            f"{where}: no column {name!r} (data.us10k.memorability_columns.{key}: set it to the sheet's spelling"
            f"{fix}); "
            f"columns present: {[str(c) for c in table.columns]}"
        )
    return table[name]


def _trial_counts(table: pd.DataFrame, settings: Us10kParams, where: Path, rows) -> tuple[np.ndarray, np.ndarray]:
    """Hits and misses per row: whole numbers >= 0, checked against the hit-rate column."""
    columns = settings.memorability_columns
    named = {"hits": columns.hits, "misses": columns.misses}
    raw = pd.DataFrame({name: _memorability_column(table, name, key, where, True) for key, name in named.items()})
    counts = numeric_ratings(raw, (0.0, np.inf), where, rows)
    for name in counts.columns:
        fractional = np.flatnonzero((counts[name].notna() & (counts[name] % 1 != 0)).to_numpy())
        if len(fractional):
            raise DataError(f"{where}: column {name!r}: not a whole count at {rows(int(fractional[0]))}")
    hits, misses = (counts[name].to_numpy() for name in named.values())
    rate = pd.to_numeric(table[columns.hit_rate], errors="coerce").to_numpy(dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        off = np.abs(rate - hits / (hits + misses)) > HIT_RATE_TOLERANCE
    off |= np.isnan(hits + misses) != np.isnan(rate)
    if off.any():
        i = int(np.flatnonzero(off)[0])
        raise DataError(
            f"{where}: {rows(i)}: {columns.hit_rate!r} = {rate[i]:g} but {columns.hits!r} / ({columns.hits!r} + "
            f"{columns.misses!r}) = {hits[i]:g} / {hits[i] + misses[i]:g}: the counts do not belong to this hit rate"
        )
    return np.nan_to_num(hits).astype(np.int64), np.nan_to_num(misses).astype(np.int64)


def read_memorability(root: Path, settings: Us10kParams, ids: list[str]) -> tuple[np.ndarray, pd.DataFrame | None]:
    """The memorability of each face in `ids` (NaN where the scores table has no row or no value for it) and, for the
    hit rate with counts, one rating per target trial (hit 1, miss 0; every trial another participant), so the
    split-half ceiling reads memorability as it reads a trait. HR - FAR mixes target and foil trials: no trials."""
    path = require_file(
        resolve_inside(root, settings.memorability_table, "data.us10k.memorability_table"), "memorability table"
    )
    is_workbook = path.suffix.lower() in (".xlsx", ".xlsm", ".xls")
    table = read_sheet(path, settings.memorability_sheet if is_workbook else None)
    sheet = "first sheet" if settings.memorability_sheet is None else f"sheet {settings.memorability_sheet!r}"
    where = Path(f"{path} {sheet}") if is_workbook else path
    columns = settings.memorability_columns
    rows = sheet_rows()
    names = unique_ids(_memorability_column(table, columns.filename, "filename", where), where, rows)
    stray = np.flatnonzero(~names.isin(ids).to_numpy())
    if len(stray):
        listed = ", ".join(f"{rows(int(i))} ({names.iloc[i]!r})" for i in stray[:5])
        raise DataError(
            f"{where}: memorability for image(s) not in the attribute table ({len(stray)}): {listed}; both files "
            "describe the same annotated targets, so a name missing there is a misspelt name or the wrong file"
        )
    rates = {columns.hit_rate: _memorability_column(table, columns.hit_rate, "hit_rate", where)}
    if settings.memorability == "corrected_hit_rate":
        far = columns.false_alarm_rate
        rates[far] = _memorability_column(table, far, "false_alarm_rate", where)
    parsed = numeric_ratings(pd.DataFrame(rates), RATE, where, rows)
    score = parsed[columns.hit_rate] - parsed.get(columns.false_alarm_rate, 0.0)
    target = pd.Series(score.to_numpy(), index=names.to_numpy()).reindex(ids).to_numpy(dtype=np.float64)
    if settings.memorability != "hit_rate" or columns.hits is None or columns.misses is None:
        return target, None
    hits, misses = _trial_counts(table, settings, where, rows)
    trials = hits + misses
    row = np.repeat(np.arange(len(table)), trials)
    outcome = np.repeat(np.tile([1.0, 0.0], len(table)), np.column_stack([hits, misses]).ravel())
    ratings = long_ratings(
        ids=pd.Series(names.to_numpy()[row]),
        attributes=pd.Series(MEMORABILITY, index=range(len(row))),
        ratings=pd.Series(outcome),
        known_ids=ids,
        wanted=[MEMORABILITY],
        scale=RATE,
        file=where,
        row_label=sheet_rows(2, row),
    )
    return target, ratings


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
    with_memorability = settings.memorability != "none"
    if with_memorability and MEMORABILITY in available:
        raise DataError(
            f"{where}: a column {MEMORABILITY!r} clashes with the memorability target (data.us10k.memorability)"
        )
    offered = [*available, MEMORABILITY] if with_memorability else available
    chosen = select_attributes(offered, params.attributes, where)
    if with_memorability and MEMORABILITY not in chosen:
        raise DataError(
            f"data.us10k.memorability is {settings.memorability!r} but data.attributes does not list {MEMORABILITY!r}: "
            "add it, or set data.us10k.memorability: none"
        )
    attributes = tuple(a for a in chosen if a != MEMORABILITY)
    means = numeric_ratings(table[list(attributes)], SCALE, where, rows)
    source_files = [str(Path(settings.images) / name) for name in ids]
    for i, source_file in enumerate(source_files):
        resolve_inside(root, source_file, f"{where} {rows(i)}")
    faces = pd.concat(
        [pd.DataFrame({"id": ids, "source_file": source_files, "group": ids}), means.reset_index(drop=True)], axis=1
    )
    ratings = None
    if is_workbook and settings.ratings_sheet in pd.ExcelFile(table_file).sheet_names and attributes:
        ratings = _raw_ratings(table_file, settings.ratings_sheet, attributes, list(ids))
    if not with_memorability:
        return SourceTable(root=root, faces=faces, attributes=attributes, scale=SCALE, ratings=ratings, square="pad")
    memorability, trials = read_memorability(root, settings, list(ids))
    faces[MEMORABILITY] = memorability
    if trials is not None:
        ratings = trials if ratings is None else compact_ratings(pd.concat([ratings, trials], ignore_index=True))
    return SourceTable(
        root=root,
        faces=faces[["id", "source_file", "group", *chosen]],
        attributes=chosen,
        scale=SCALE,
        ratings=ratings,
        square="pad",
        other_scales={MEMORABILITY: MEMORABILITY_SCALES[settings.memorability]},
    )
