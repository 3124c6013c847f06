"""CSV outputs, which people open in spreadsheets: a text cell that starts like a formula stays text.

A cell such as `=HYPERLINK(...)` or `@SUM(...)` in an id, a source file name or an attribute name would
otherwise run as a formula when the file is opened (CSV injection). Text starting with `=`, `+`, `-`,
`@`, a tab or a carriage return gets a leading `'`; numbers, negative ones included, are left as they are.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TextIO

import pandas as pd

from facetraits.files import atomic_path

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def neutralised(value: Any) -> Any:
    return "'" + value if isinstance(value, str) and value.startswith(FORMULA_STARTS) else value


def _is_text(values: pd.Series | pd.Index) -> bool:
    return values.dtype == object or isinstance(values.dtype, pd.CategoricalDtype | pd.StringDtype)


def spreadsheet_safe(table: pd.DataFrame) -> pd.DataFrame:
    """A copy of `table` whose text cells, column names and index labels cannot start a formula."""
    safe = table.copy()
    for position in range(safe.shape[1]):
        column = safe.iloc[:, position]
        if _is_text(column):
            safe.isetitem(position, column.map(neutralised))
    safe.columns = safe.columns.map(neutralised)
    if _is_text(safe.index):
        safe.index = safe.index.map(neutralised)
    return safe


def write_csv(table: pd.DataFrame, target: Path | TextIO, **options: Any) -> None:
    """Every CSV output goes through here: to a file (written atomically) or an open stream."""
    safe = spreadsheet_safe(table)
    if isinstance(target, str | Path):
        with atomic_path(Path(target)) as tmp:
            safe.to_csv(tmp, **options)
    else:
        safe.to_csv(target, **options)
