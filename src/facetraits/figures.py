"""Matplotlib figures shared by the stages (headless: the Agg backend)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from facetraits.files import atomic_path


def save_figure(figure: Figure, path: Path, dpi: int = 110) -> Path:
    """PNG written atomically: a figure is a DVC output like any other."""
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=dpi)
    return path


def learning_curves(history: pd.DataFrame) -> Figure:
    """Losses and mean val Pearson per epoch, side by side; ticks at whole epochs, and every curve a marker per
    epoch, so a one-epoch history (a probe) shows as named points."""
    figure = Figure(figsize=(9, 3.5), layout="constrained")
    losses, pearson = figure.subplots(1, 2)
    for column in ("train_loss", "val_loss"):
        if history[column].notna().any():
            losses.plot(history["epoch"], history[column], marker="o", label=column.replace("_", " "))
    losses.set(xlabel="epoch", ylabel="loss (standardized units)", title="Loss")
    if history["val_pearson_mean"].isna().all():
        pearson.text(0.5, 0.5, "none: the val faces were fitted\n(train.fit_on: train+val)", ha="center", va="center",
                     transform=pearson.transAxes)  # fmt: skip
        pearson.set(xticks=[], yticks=[])
    else:
        pearson.plot(history["epoch"], history["val_pearson_mean"], marker="o", color="tab:green", label="val mean r")
    pearson.set(xlabel="epoch", ylabel="mean Pearson r", title="Validation mean Pearson r")
    for axes in (losses, pearson):
        if axes.lines:
            axes.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))  # one epoch: one tick
            axes.legend()
    return figure


def prediction_scatter(human: np.ndarray, predicted: np.ndarray, attribute: str, split: str) -> Figure:
    """Predicted against human mean rating, with r and the identity line."""
    figure = Figure(figsize=(3.6, 3.6), layout="constrained")
    axes = figure.subplots()
    observed = np.isfinite(human) & np.isfinite(predicted)
    axes.scatter(human[observed], predicted[observed], s=8, alpha=0.6)
    low = float(np.nanmin(np.concatenate([human[observed], predicted[observed]]))) if observed.any() else 0.0
    high = float(np.nanmax(np.concatenate([human[observed], predicted[observed]]))) if observed.any() else 1.0
    axes.plot([low, high], [low, high], color="grey", linewidth=0.8, linestyle="--")
    r = np.corrcoef(human[observed], predicted[observed])[0, 1] if observed.sum() > 2 else float("nan")
    axes.set(xlabel="human mean rating", ylabel="predicted", title=f"{attribute} ({split}), r = {r:.2f}")
    return figure
