"""The paper's comparison table: human reliability and noise ceiling next to each method's test r."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from facetraits.errors import DataError

HUMAN_RELIABILITY = "human reliability"
HUMAN_CEILING = "human ceiling"
MEAN_ROW = "mean"
HUMAN_COLUMNS = ("reliability", "ceiling")


def ratio_column(method: str) -> str:
    return f"{method} r/ceiling"


def method_scores(
    methods: Mapping[str, Mapping[str, float]], attributes: Sequence[str], sources: Mapping[str, str] | None = None
) -> pd.DataFrame:
    """(attribute x method) test r, NaN where a method has no score; one validation for the table and the tests.

    An attribute outside `attributes` is an error rather than dropped: a score the report would silently not show
    means the metrics files and the attribute list disagree (a stale file). Errors start with the method's entry
    in `sources` (its metrics file), so the message says which stage to rerun.
    """
    attributes = list(attributes)
    duplicated = sorted({a for a in attributes if attributes.count(a) > 1})
    if duplicated:
        raise DataError(f"attributes listed twice: {duplicated}")
    if MEAN_ROW in attributes:
        raise DataError(f"attribute {MEAN_ROW!r} collides with the table's mean row")
    known = set(attributes)
    columns: dict[str, list[float]] = {}
    for method, scores in methods.items():
        where = f"{sources[method]}: " if sources and method in sources else ""
        unknown = sorted(set(scores) - known)
        if unknown:
            stale = "; the file is stale: rerun the stage that writes it (dvc repro)" if where else ""
            raise DataError(f"{where}method {method!r} has scores for attributes not in the report: {unknown}{stale}")
        for attribute, r in scores.items():
            if not (math.isnan(r) or -1.0 <= r <= 1.0):
                raise DataError(f"{where}method {method!r}, attribute {attribute!r}: r = {r} is outside [-1, 1]")
        columns[method] = [float(scores.get(a, math.nan)) for a in attributes]
    return pd.DataFrame(columns, index=pd.Index(attributes, name="attribute"), dtype=np.float64)


def comparison_table(
    human: pd.DataFrame | None,
    methods: Mapping[str, Mapping[str, float]],
    attributes: Sequence[str],
    sources: Mapping[str, str] | None = None,
) -> pd.DataFrame:
    """Rows: `attributes` in order, then "mean"; cells are the input floats unrounded, so they can be checked exactly.

    Every column's mean row is the mean of that column over the attributes that have a value (NaN-aware), so
    "<method> r/ceiling" in the mean row is the mean of the per-attribute ratios, not mean r over mean ceiling.
    A ratio is NaN where the ceiling is missing or not positive: there is nothing to be a fraction of.
    """
    scores = method_scores(methods, attributes, sources)
    parts = [scores]
    if human is not None:
        missing = [c for c in HUMAN_COLUMNS if c not in human.columns]
        if missing:
            raise DataError(f"human table lacks column(s) {missing}; it has {list(human.columns)}")
        if not human.index.is_unique:
            raise DataError(
                f"human table lists attribute(s) twice: {sorted(set(human.index[human.index.duplicated()]))}"
            )
        reference = human.reindex(scores.index)[list(HUMAN_COLUMNS)].astype(np.float64)
        ceiling = reference["ceiling"].where(reference["ceiling"] > 0)
        reference.columns = [HUMAN_RELIABILITY, HUMAN_CEILING]
        ratios = scores.div(ceiling, axis=0).rename(columns=ratio_column)
        parts = [reference, scores, ratios]
    table = pd.concat(parts, axis=1)
    clashing = sorted(set(table.columns[table.columns.duplicated()]))
    if clashing:
        raise DataError(f"method label(s) {clashing} clash with another column of the comparison table")
    table.loc[MEAN_ROW] = table.mean(axis=0, skipna=True)
    return table
