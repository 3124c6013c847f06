"""Heatmaps over faces: per-face galleries and mean maps, for MLflow and the report."""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence

import matplotlib
import numpy as np
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

_COLOURMAP = matplotlib.colormaps["jet"]
_TITLE_POINTS = 9
_TITLE_CHARACTER_INCHES = 0.62 * _TITLE_POINTS / 72  # wider than DejaVu Sans's average character: wraps early, not late


def normalized(heatmap: np.ndarray) -> np.ndarray:
    """Scaled to [0, 1] by its 99th percentile: one hot pixel should not wash out the rest of the map."""
    top = float(np.percentile(heatmap, 99))
    return np.clip(heatmap / top, 0, 1) if top > 0 else np.zeros_like(heatmap, dtype=np.float64)


def overlay(face: np.ndarray, heatmap: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """uint8 face (H, W, 3) blended with the jet-coloured, normalized heatmap (H, W)."""
    colour = _COLOURMAP(normalized(heatmap))[..., :3] * 255
    return np.round((1 - alpha) * face.astype(np.float64) + alpha * colour).astype(np.uint8)


def heatmap_gallery(
    faces: np.ndarray, heatmaps: np.ndarray, roles: Sequence[str], captions: Sequence[str], title: str
) -> Figure:
    """One row per role (highest / lowest / random prediction), faces with their heatmaps laid over."""
    order = list(dict.fromkeys(roles))
    columns = max(list(roles).count(role) for role in order)
    width = 1.3 * columns + 0.8
    # a narrow gallery (two faces a row) is narrower than its title: the title wraps to lines that fit the figure
    title = textwrap.fill(title, width=int((width - 0.2) / _TITLE_CHARACTER_INCHES), break_long_words=False)
    title_inches = 1.4 * _TITLE_POINTS / 72 * (title.count("\n") + 1)
    height = 1.45 * len(order) + 0.2 + title_inches
    figure = Figure(figsize=(width, height))
    # Fixed margins in inches: a constrained layout measured every caption and took half of each figure's time.
    figure.subplots_adjust(
        left=0.45 / width, right=1 - 0.1 / width, bottom=0.05 / height, top=1 - (0.3 + title_inches) / height,
        wspace=0.12, hspace=0.3,
    )  # fmt: skip
    axes = np.atleast_2d(figure.subplots(len(order), columns, squeeze=False))
    for ax in axes.flat:
        ax.set_axis_off()
    for row, role in enumerate(order):
        members = [k for k, r in enumerate(roles) if r == role]
        for column, k in enumerate(members):
            ax = axes[row, column]
            ax.imshow(overlay(faces[k], heatmaps[k]))
            ax.set_title(captions[k], fontsize=7)
        axes[row, 0].text(-0.08, 0.5, role, transform=axes[row, 0].transAxes, rotation=90, ha="right", va="center")
    figure.suptitle(title, fontsize=_TITLE_POINTS, y=1 - 0.08 / height, va="top")
    return figure


def mean_heatmap_grid(mean_face: np.ndarray, means: Mapping[str, Mapping[str, np.ndarray]], title: str) -> Figure:
    """Rows = attributes, columns = methods: each mean map over the mean face (faces are aligned)."""
    attributes = list(means)
    methods = list(dict.fromkeys(m for per_method in means.values() for m in per_method))
    width, height = 1.5 * len(methods) + 1.0, 1.5 * len(attributes) + 0.5
    figure = Figure(figsize=(width, height))
    # Fixed margins in inches (the row labels left, the title and column titles above), as in the galleries.
    figure.subplots_adjust(
        left=0.35 / width, right=1 - 0.1 / width, bottom=0.1 / height, top=1 - 0.5 / height, wspace=0.05, hspace=0.08
    )
    axes = figure.subplots(len(attributes), len(methods), squeeze=False)
    for row, attribute in enumerate(attributes):
        for column, method in enumerate(methods):
            ax = axes[row, column]
            ax.set_xticks([])
            ax.set_yticks([])
            if method in means[attribute]:
                ax.imshow(overlay(mean_face, means[attribute][method]))
            if row == 0:
                ax.set_title(method.replace("_", " "), fontsize=8)
            if column == 0:
                ax.set_ylabel(attribute, fontsize=8)
    figure.suptitle(title, fontsize=9, y=1 - 0.08 / height, va="top")
    return figure


def _region_edges(layout: np.ndarray) -> np.ndarray:
    """Pixels whose right or lower neighbour lies in another region: the outline drawn between parts."""
    edges = np.zeros(layout.shape, dtype=bool)
    edges[:, :-1] |= layout[:, 1:] != layout[:, :-1]
    edges[:-1, :] |= layout[1:, :] != layout[:-1, :]
    return edges


def region_importance_grid(
    layout: np.ndarray, regions: Sequence[str], importance: Mapping[str, Mapping[str, np.ndarray]], title: str
) -> Figure:
    """Rows = models, columns = attributes: the typical face's regions (`layout`, (H, W) indices into `regions`), each
    filled with its importance (one colour scale for every panel, so attributes and models compare), and a first
    panel naming the regions."""
    models = list(importance)
    attributes = list(dict.fromkeys(a for per_attribute in importance.values() for a in per_attribute))
    top = max(float(np.nanmax(v)) for per_attribute in importance.values() for v in per_attribute.values())
    top = top if np.isfinite(top) and top > 0 else 1.0
    colours = matplotlib.colormaps["YlOrRd"]
    edges = _region_edges(layout)
    figure = Figure(figsize=(1.6 * (len(attributes) + 1) + 0.8, 1.7 * len(models) + 0.6), layout="constrained")
    axes = figure.subplots(len(models), len(attributes) + 1, squeeze=False)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    for row, model in enumerate(models):
        key = axes[row, 0]
        key.imshow(np.where(edges, 0.0, 0.93), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        key.set_ylabel(model, fontsize=8)
        if row == 0:
            key.set_title("regions", fontsize=8)
            for index, region in enumerate(regions):
                ys, xs = np.nonzero(layout == index)
                if len(xs) and region != "background":  # at the region's pixel nearest its centre: a ring's is on it
                    at = np.argmin((xs - xs.mean()) ** 2 + (ys - ys.mean()) ** 2)
                    key.text(xs[at], ys[at], region.replace("_", "/"), fontsize=5, ha="center", va="center")
        for column, attribute in enumerate(attributes, start=1):
            ax = axes[row, column]
            values = importance[model].get(attribute)
            if values is None:
                continue
            filled = colours(np.nan_to_num(np.asarray(values)[layout], nan=0.0) / top)[..., :3]
            filled[edges] = 0.0
            ax.imshow(filled, interpolation="nearest")
            if row == 0:
                ax.set_title(attribute, fontsize=8)
    scale = ScalarMappable(Normalize(0, top), colours)
    figure.colorbar(scale, ax=axes[:, 1:], shrink=0.8, label="mean |drop| of the prediction (SD)")
    figure.suptitle(title, fontsize=9)
    return figure
