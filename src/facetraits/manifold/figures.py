"""Maps of faces coloured by attributes and attribute correlation heatmaps, as static figures and one HTML page."""

from __future__ import annotations

import html
import json
import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from facetraits.errors import DataError
from facetraits.manifold.scores import LABEL_SEPARATOR

_MISSING = "#d0d0d0"
_PANEL_INCHES = 2.4
# Above this many attributes the r values no longer fit in their heatmap cells.
_ANNOTATE_UP_TO = 15


def embedding_grid(coords2d: np.ndarray, colour_values: pd.DataFrame, title: str) -> Figure:
    """One panel per attribute, same map in each, faces coloured by their percentile within that attribute.

    Percentiles put attributes on different scales (age in years, 0-100 ratings) under one colour bar and
    keep a few extreme faces from washing out the rest; unrated faces are grey.
    """
    coords = _checked_coords(coords2d, len(colour_values), 2)
    figure, panels = _panel_grid(len(colour_values.columns), title)
    size = _marker_size(len(coords))
    mappable = None
    for axes, name in zip(panels, colour_values.columns, strict=True):
        percentile = colour_values[name].astype(np.float64).rank(pct=True).to_numpy() * 100
        rated = np.isfinite(percentile)
        axes.scatter(*coords[~rated].T, s=size, c=_MISSING, linewidths=0, rasterized=True)
        mappable = axes.scatter(
            *coords[rated].T,
            s=size,
            c=percentile[rated],
            cmap="viridis",
            vmin=0,
            vmax=100,
            linewidths=0,
            rasterized=True,
        )
        axes.set_title(str(name), fontsize=8)
    if mappable is not None:
        figure.colorbar(mappable, ax=panels, label="percentile within attribute", shrink=0.8)
    return figure


def label_scatter(coords2d: np.ndarray, labels: pd.DataFrame, title: str) -> Figure:
    """One panel per pair label (attractive > unattractive, ...): faces with it, without it, and unrated."""
    coords = _checked_coords(coords2d, len(labels), 2)
    figure, panels = _panel_grid(len(labels.columns), title)
    size = _marker_size(len(coords))
    for axes, name in zip(panels, labels.columns, strict=True):
        label = labels[name]
        groups = (
            ("no", "tab:blue", label.eq(False)),
            ("yes", "tab:red", label.eq(True)),
            ("unrated", _MISSING, label.isna()),
        )
        for caption, colour, members in groups:
            chosen = members.fillna(False).to_numpy(dtype=bool)
            if chosen.any():
                axes.scatter(
                    *coords[chosen].T,
                    s=size,
                    c=colour,
                    linewidths=0,
                    rasterized=True,
                    label=f"{caption} ({chosen.sum()})",
                )
        axes.set_title(str(name).replace(LABEL_SEPARATOR, " > "), fontsize=8)
        axes.legend(fontsize=6, markerscale=2, loc="best")
    return figure


def embedding_3d(coords3d: np.ndarray, colour: np.ndarray, title: str) -> Figure:
    """A 3-D map coloured by one attribute; unrated faces grey."""
    coords = _checked_coords(coords3d, len(colour), 3)
    colour = np.asarray(colour, dtype=np.float64)
    rated = np.isfinite(colour)
    figure = Figure(figsize=(5.5, 4.5), layout="constrained")
    axes = figure.add_subplot(projection="3d")
    size = _marker_size(len(coords))
    axes.scatter(*coords[~rated].T, s=size, c=_MISSING, linewidths=0)
    points = axes.scatter(*coords[rated].T, s=size, c=colour[rated], cmap="viridis", linewidths=0)
    axes.set(xticklabels=[], yticklabels=[], zticklabels=[])
    figure.colorbar(points, ax=axes, shrink=0.6)
    figure.suptitle(title, fontsize=9)
    return figure


def correlation_heatmap(corr: pd.DataFrame, order: Sequence[str], title: str) -> Figure:
    """Pearson r between attributes in `order`, -1 blue to +1 red, values written in when they fit."""
    ordered = corr.loc[list(order), list(order)]
    side = max(4.0, 0.3 * len(order) + 2.0)
    figure = Figure(figsize=(side + 0.8, side), layout="constrained")
    axes = figure.subplots()
    image = axes.imshow(ordered.to_numpy(dtype=np.float64), cmap="RdBu_r", vmin=-1, vmax=1)
    ticks = np.arange(len(order))
    axes.set_xticks(ticks, [str(name) for name in order], rotation=90, fontsize=7)
    axes.set_yticks(ticks, [str(name) for name in order], fontsize=7)
    if len(order) <= _ANNOTATE_UP_TO:
        for (row, column), r in np.ndenumerate(ordered.to_numpy(dtype=np.float64)):
            if np.isfinite(r):
                axes.text(
                    column,
                    row,
                    f"{r:.2f}",
                    ha="center",
                    va="center",
                    fontsize=6,
                    color="white" if abs(r) > 0.6 else "black",
                )
    figure.colorbar(image, ax=axes, label="Pearson r", shrink=0.8)
    axes.set_title(title, fontsize=9)
    return figure


def interactive_scatter_html(
    coords2d: np.ndarray, ids: Sequence[str] | np.ndarray, colour_values: pd.DataFrame, title: str
) -> str:
    """A self-contained page (no network): the map on a canvas, a menu of colouring attributes, ids on hover."""
    coords = _checked_coords(coords2d, len(ids), 2)
    if len(colour_values) != len(ids):
        raise DataError(f"colour_values has {len(colour_values)} rows for {len(ids)} ids")
    payload = {
        "ids": [str(face) for face in ids],
        "x": _json_numbers(coords[:, 0]),
        "y": _json_numbers(coords[:, 1]),
        "values": {
            str(name): _json_numbers(colour_values[name].to_numpy(dtype=np.float64)) for name in colour_values.columns
        },
    }
    # "<" escaped so no id or attribute name can close the script element.
    data = json.dumps(payload, allow_nan=False).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    options = "".join(f"<option>{html.escape(str(name))}</option>" for name in colour_values.columns)
    return _PAGE.replace("__TITLE__", html.escape(title)).replace("__OPTIONS__", options).replace("__DATA__", data)


def _panel_grid(count: int, title: str) -> tuple[Figure, list[Axes]]:
    """Near-square grid of panels sharing axes (one map, many colourings), without ticks: map axes have no units."""
    columns = max(1, math.ceil(math.sqrt(count)))
    rows = max(1, math.ceil(count / columns))
    figure = Figure(figsize=(_PANEL_INCHES * columns + 1.0, _PANEL_INCHES * rows + 0.5), layout="constrained")
    grid = figure.subplots(rows, columns, sharex=True, sharey=True, squeeze=False).ravel()
    for unused in grid[count:]:
        figure.delaxes(unused)
    panels = list(grid[:count])
    for axes in panels:
        axes.set(xticks=[], yticks=[])
    figure.suptitle(title, fontsize=9)
    return figure, panels


def _marker_size(count: int) -> float:
    return float(np.clip(2000 / max(count, 1), 1, 16))


def _checked_coords(coords: np.ndarray, rows: int, dims: int) -> np.ndarray:
    coords = np.asarray(coords, dtype=np.float64)
    if coords.shape != (rows, dims):
        raise DataError(f"coords must be ({rows}, {dims}) to match the colouring, got shape {coords.shape}")
    return coords


def _json_numbers(values: np.ndarray) -> list[float | None]:
    return [float(f"{v:.4g}") if np.isfinite(v) else None for v in values]


_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>__TITLE__</title>
<style>body{font:14px sans-serif;margin:16px}#tip{position:absolute;background:#fff;border:1px solid #888;
padding:2px 6px;pointer-events:none;display:none}canvas{border:1px solid #ccc}</style></head>
<body><h3>__TITLE__</h3>
<label>colour by <select id="attribute">__OPTIONS__</select></label> <span id="range"></span><br>
<canvas id="map" width="640" height="640"></canvas><div id="tip"></div>
<script>
const data = __DATA__;
const canvas = document.getElementById("map"), ctx = canvas.getContext("2d");
const menu = document.getElementById("attribute"), tip = document.getElementById("tip");
const pad = 12, n = data.ids.length;
const span = (v) => [v.reduce((a, b) => Math.min(a, b), Infinity), v.reduce((a, b) => Math.max(a, b), -Infinity)];
const [x0, x1] = span(data.x), [y0, y1] = span(data.y);
const px = data.x.map((v) => pad + (v - x0) / (x1 - x0 || 1) * (canvas.width - 2 * pad));
const py = data.y.map((v) => canvas.height - pad - (v - y0) / (y1 - y0 || 1) * (canvas.height - 2 * pad));
const stops = [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]];
function colour(t) {
  const f = Math.min(Math.max(t, 0), 1) * (stops.length - 1), i = Math.min(Math.floor(f), stops.length - 2), w = f - i;
  return "rgb(" + stops[i].map((c, k) => Math.round(c + w * (stops[i + 1][k] - c))).join(",") + ")";
}
function draw() {
  const values = data.values[menu.value], rated = values.filter((v) => v !== null);
  const [lo, hi] = span(rated);
  document.getElementById("range").textContent = rated.length ? "dark " + lo + " to yellow " + hi : "no ratings";
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  const r = n > 2000 ? 1.5 : 3;
  for (let i = 0; i < n; i++) {
    ctx.fillStyle = values[i] === null ? "#d0d0d0" : colour((values[i] - lo) / (hi - lo || 1));
    ctx.beginPath(); ctx.arc(px[i], py[i], r, 0, 2 * Math.PI); ctx.fill();
  }
}
canvas.addEventListener("mousemove", (event) => {
  const box = canvas.getBoundingClientRect(), mx = event.clientX - box.left, my = event.clientY - box.top;
  let best = -1, bestDistance = 64;
  for (let i = 0; i < n; i++) {
    const d = (px[i] - mx) ** 2 + (py[i] - my) ** 2;
    if (d < bestDistance) { best = i; bestDistance = d; }
  }
  if (best < 0) { tip.style.display = "none"; return; }
  const value = data.values[menu.value][best];
  tip.textContent = data.ids[best] + ": " + menu.value + " = " + (value === null ? "unrated" : value);
  tip.style.left = event.pageX + 12 + "px"; tip.style.top = event.pageY + 12 + "px"; tip.style.display = "block";
});
canvas.addEventListener("mouseleave", () => { tip.style.display = "none"; });
menu.addEventListener("change", draw);
draw();
</script></body></html>
"""
