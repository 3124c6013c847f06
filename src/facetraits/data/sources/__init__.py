"""Readers that turn each supported data-set layout into one SourceTable."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from facetraits.config import DataParams, SourceName
from facetraits.data.sources.base import DecodeFile, SourceFaces, SourceTable
from facetraits.data.sources.cfd import read_cfd
from facetraits.data.sources.csv_table import read_csv_source
from facetraits.data.sources.omi import read_omi
from facetraits.data.sources.synthetic import render_synthetic
from facetraits.data.sources.us10k import read_us10k
from facetraits.errors import DataError

FILE_SOURCES: dict[SourceName, Callable[[DataParams], SourceTable]] = {
    "omi": read_omi,
    "us10k": read_us10k,
    "cfd": read_cfd,
    "csv": read_csv_source,
}


def read_files(params: DataParams) -> SourceFaces:
    """A file-based source: its table, and each face decoded from its image file."""
    table = read_source(params)
    square = table.square if params.square == "auto" else params.square
    items = [table.root / f for f in table.faces["source_file"]]
    return SourceFaces(table, items, DecodeFile(params.image_size, square, params.max_image_pixels))


# every data.source: what prepare reads or renders its faces with
SOURCES: dict[SourceName, Callable[[DataParams], SourceFaces]] = {
    "synthetic": render_synthetic,
    **{name: read_files for name in FILE_SOURCES},
}


def open_source(params: DataParams) -> SourceFaces:
    opener = SOURCES.get(params.source)
    if opener is None:
        raise DataError(f"data.source: unknown source '{params.source}' ({sorted(SOURCES)})")
    return opener(params)


def read_source(params: DataParams) -> SourceTable:
    """Read the table of a file-based source; the data root must exist."""
    reader = FILE_SOURCES.get(params.source)
    if reader is None:
        raise DataError(f"data.source: '{params.source}' is not a file-based source ({sorted(FILE_SOURCES)})")
    if not Path(params.path).is_dir():
        raise DataError(f"data.path: data root '{params.path}' is not a directory")
    return reader(params)


__all__ = ["FILE_SOURCES", "SOURCES", "SourceFaces", "SourceTable", "open_source", "read_source"]
