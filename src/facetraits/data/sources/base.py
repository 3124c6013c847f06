"""What every data-set reader returns, and the checks they all share."""

from __future__ import annotations

import io
import re
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from facetraits.data.images import load_face
from facetraits.errors import DataError

RESERVED_COLUMNS = ("id", "source_file", "group", "split")
RATING_COLUMNS = ("id", "attribute", "rating", "rater", "rating_type")
_MAX_LISTED = 5
# attribute names become file names (figures/scatter/<name>.png) and MLflow metric keys
ATTRIBUTE_NAME = re.compile(r"\w(?:[\w .-]*\w)?")
# only an empty cell is a missing value: 'NA', 'NaN', 'null' in a data file are text, refused as ratings
NA_OPTIONS = {"keep_default_na": False, "na_values": [""]}

RowLabel = Callable[[int], str]


@dataclass(frozen=True)
class SourceTable:
    """One row per image to prepare, and (when the source has them) every single rating.

    faces: columns id, source_file (relative to root), group (identity: faces of one group never
    cross splits), then one float column per attribute (mean rating, NaN where missing).
    ratings: columns RATING_COLUMNS; rater/rating_type are empty where the source does not record them.
    scale: the rating scale of every attribute but those in `other_scales` (us10k's memorability, a rate in [0, 1]
    next to 1-9 ratings). Scales only bound what a reader accepts and are recorded in meta.json: training and every
    score standardize or correlate each attribute on its own, so attributes on different scales mix freely.
    """

    root: Path
    faces: pd.DataFrame
    attributes: tuple[str, ...]
    scale: tuple[float, float]
    ratings: pd.DataFrame | None
    square: Literal["crop", "pad"]
    other_scales: Mapping[str, tuple[float, float]] = field(default_factory=dict)


FaceJob = Callable[[Any], tuple[np.ndarray, "np.ndarray | None"]]  # item -> (square face, region bits or None)


@dataclass(frozen=True)
class DecodeFile:
    """Picklable per-image work for file sources: the item is the image's path."""

    size: int
    square: Literal["crop", "pad"]
    max_pixels: int

    def __call__(self, item: Path) -> tuple[np.ndarray, None]:
        return load_face(item, self.size, self.square, self.max_pixels), None


@dataclass(frozen=True)
class GroundTruth:
    """What rendered faces know about themselves: which pixels belong to which region (masks.npy), the regions
    each attribute is drawn in (meta.json) and each face's latent factors (factors.csv), in the table's row order."""

    regions: tuple[str, ...]
    attribute_regions: Mapping[str, tuple[str, ...]]
    factors: pd.DataFrame


@dataclass(frozen=True)
class SourceFaces:
    """What prepare needs from any source: its table, one item per face row and the picklable job that turns an
    item into a square face (with region bits when the source has ground truth)."""

    table: SourceTable
    items: Sequence[Any]
    make_face: FaceJob
    ground_truth: GroundTruth | None = None



def resolve_inside(root: Path, relative: str, where: str) -> Path:
    """The file `relative` names under `root`; refuses paths that escape the data root."""
    root = root.resolve()
    candidate = (root / relative).resolve()
    if not candidate.is_relative_to(root):
        raise DataError(f"{where}: path '{relative}' escapes the data root {root}")
    return candidate


def require_file(path: Path, what: str) -> Path:
    if not path.is_file():
        raise DataError(f"{path}: {what} not found")
    return path


def require_columns(table: pd.DataFrame, columns: Sequence[str], file: Path) -> None:
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise DataError(f"{file}: missing column(s) {missing}; columns present: {list(table.columns)}")


def select_attributes(available: Sequence[str], wanted: str | Sequence[str], file: Path) -> tuple[str, ...]:
    """Resolve data.attributes ('all' or a list) against the attributes a file provides."""
    if wanted == "all":
        chosen = tuple(available)
    else:
        unknown = [a for a in wanted if a not in available]
        if unknown:
            raise DataError(
                f"data.attributes: unknown attribute(s) {unknown} for {file}; available: {list(available)}"
            )
        chosen = tuple(wanted)
    unsafe = [a for a in chosen if not ATTRIBUTE_NAME.fullmatch(str(a))]
    if unsafe:
        raise DataError(
            f"{file}: attribute column(s) {unsafe}: a name may hold only letters, digits, spaces, '_', '-' and '.', "
            "and must begin and end with a letter or digit (it becomes a file name and an MLflow key)"
        )
    reserved = [a for a in chosen if a in RESERVED_COLUMNS]
    if reserved:
        raise DataError(f"{file}: attribute column(s) {reserved} clash with the reserved names {RESERVED_COLUMNS}")
    if not chosen:
        raise DataError(f"{file}: no attribute columns found")
    return chosen


# compressed tables expand ~10x (OMI's raw ratings: 2.4 MB -> 23.7 MB); a gzip or zip bomb ~1000x
MAX_EXPANSION = 100
_SMALLEST_BUDGET = 1 << 16


class _ExpansionLimit(io.RawIOBase):
    def __init__(self, stream: io.IOBase, limit: int, file: Path) -> None:
        super().__init__()
        self.stream, self.limit, self.file, self.count = stream, limit, file, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        data = self.stream.read(len(buffer))
        buffer[: len(data)] = data
        self.count += len(data)
        if self.count > self.limit:
            raise DataError(
                f"{self.file}: decompresses to over {self.limit:,} bytes, {MAX_EXPANSION} times its compressed size; "
                "refused as a decompression bomb (decompress it yourself if it is genuine)"
            )
        return len(data)


def bounded_decompression(
    open_stream: Callable[[], io.IOBase], compressed_size: int, file: Path
) -> Callable[[], io.BufferedReader]:
    """Opens a decompressing stream that stops at MAX_EXPANSION x the compressed size: memory follows the file's size."""
    limit = MAX_EXPANSION * max(compressed_size, _SMALLEST_BUDGET)
    return lambda: io.BufferedReader(_ExpansionLimit(open_stream(), limit, file))


def refuse_repeated_columns(names: Sequence[object], file: Path | str, may_repeat: Sequence[str] = ()) -> None:
    """pandas renames a second `happy` column `happy.1` and goes on: two columns of one name are an error."""
    counts = Counter(str(n).strip() for n in names if not pd.isna(n) and str(n).strip() not in may_repeat)
    repeated = [name for name, count in counts.items() if count > 1]
    if repeated:
        raise DataError(f"{file}: column(s) {repeated} appear more than once in the header; rename or remove the copies")


def read_csv_checked(
    source: Path | Callable[[], object], file: Path, may_repeat: Sequence[str] = (), **options: object
) -> pd.DataFrame:
    """pd.read_csv where only an empty cell is missing and a repeated column name is refused.

    `source` is a path, or a function opening the CSV afresh (a zip member): the header is read first.
    """
    opened = source if isinstance(source, Path) else source()
    header = pd.read_csv(opened, header=None, nrows=1, dtype=str, **NA_OPTIONS).iloc[0].tolist()
    refuse_repeated_columns(header, file, may_repeat)
    opened = source if isinstance(source, Path) else source()
    return pd.read_csv(opened, **{**NA_OPTIONS, **options})


def _listed(labels: Sequence[str]) -> str:
    shown = ", ".join(labels[:_MAX_LISTED])
    return shown + (f" and {len(labels) - _MAX_LISTED} more" if len(labels) > _MAX_LISTED else "")


def numeric_ratings(
    values: pd.DataFrame, scale: tuple[float, float], file: Path, row_label: RowLabel
) -> pd.DataFrame:
    """Parse rating columns as floats; a non-numeric or out-of-scale cell is an error naming row and column."""
    low, high = scale
    parsed = {}
    for column in values.columns:
        raw = values[column]
        number = pd.to_numeric(raw, errors="coerce").astype("float64")
        unparsed = np.flatnonzero((number.isna() & raw.notna()).to_numpy())
        bad = [i for i in unparsed if str(raw.iloc[i]).strip() != ""]
        if bad:
            where = [f"{row_label(i)} ({raw.iloc[i]!r})" for i in bad]
            raise DataError(f"{file}: column '{column}': non-numeric rating at {_listed(where)}")
        out_of_scale = (number < low) | (number > high) | np.isinf(number)
        if out_of_scale.any():
            where = [f"{row_label(i)} ({number.iloc[i]:g})" for i in np.flatnonzero(out_of_scale.to_numpy())]
            raise DataError(
                f"{file}: column '{column}': rating outside the scale [{low:g}, {high:g}] at {_listed(where)}"
            )
        parsed[column] = number.to_numpy()
    return pd.DataFrame(parsed, index=values.index)


def unique_ids(ids: pd.Series, file: Path, row_label: RowLabel) -> pd.Series:
    ids = ids.astype("string").str.strip()
    empty = ids.isna() | (ids == "")
    if empty.any():
        raise DataError(f"{file}: empty id at {_listed([row_label(i) for i in np.flatnonzero(empty.to_numpy())])}")
    repeated = ids.duplicated(keep=False).to_numpy()
    if repeated.any():
        where = [f"{row_label(i)} ('{ids.iloc[i]}')" for i in np.flatnonzero(repeated)]
        raise DataError(f"{file}: duplicate id at {_listed(where)}")
    return ids.astype(str)


def sheet_rows(first_data_row: int = 2, positions: Sequence[int] | None = None) -> RowLabel:
    """Name row i as a spreadsheet shows it (1-based; a CSV's first data row is row 2).

    `positions` maps table rows back to their place in the file when rows were dropped on reading.
    """

    def label(i: int) -> str:
        return f"row {first_data_row + (positions[i] if positions is not None else i)}"

    return label


def long_ratings(
    ids: pd.Series,
    attributes: pd.Series,
    ratings: pd.Series,
    known_ids: Sequence[str],
    wanted: Sequence[str],
    scale: tuple[float, float],
    file: Path,
    row_label: RowLabel,
    raters: pd.Series | None = None,
    rating_types: pd.Series | None = None,
) -> pd.DataFrame:
    """Validate raw ratings in long form and keep those of the chosen attributes and faces."""
    table = pd.DataFrame(
        {
            "id": ids.astype("string").str.strip().to_numpy(),
            "attribute": attributes.astype("string").str.strip().to_numpy(),
            "rater": (raters.astype("string") if raters is not None else pd.Series(pd.NA, index=ids.index, dtype="string")).to_numpy(),
            "rating_type": (
                rating_types.astype("string") if rating_types is not None else pd.Series(pd.NA, index=ids.index, dtype="string")
            ).to_numpy(),
        }
    )
    rating = numeric_ratings(pd.DataFrame({"rating": ratings.to_numpy()}), scale, file, row_label)["rating"]
    missing = rating.isna().to_numpy()
    if missing.any():
        raise DataError(f"{file}: empty rating at {_listed([row_label(i) for i in np.flatnonzero(missing)])}")
    table.insert(2, "rating", rating.to_numpy())
    keep = table["attribute"].isin(list(wanted)).to_numpy()
    stray = keep & ~table["id"].isin(list(known_ids)).to_numpy()
    if stray.any():
        where = [f"{row_label(i)} ('{table['id'].iloc[i]}')" for i in np.flatnonzero(stray)]
        raise DataError(f"{file}: rating for a face that is not in the faces table at {_listed(where)}")
    return compact_ratings(table.loc[keep].reset_index(drop=True))


def compact_ratings(table: pd.DataFrame) -> pd.DataFrame:
    """Categorical labels: a million ratings repeat a few thousand distinct strings."""
    labels = {c: "category" for c in RATING_COLUMNS if c != "rating"}
    return table[list(RATING_COLUMNS)].astype(labels)
