import numpy as np
import pandas as pd
import pytest

from facetraits.figures import learning_curves


def _visible_ticks(axes) -> np.ndarray:
    low, high = axes.get_xlim()
    ticks = np.asarray(axes.get_xticks())
    return ticks[(ticks >= low) & (ticks <= high)]


@pytest.mark.parametrize("epochs", [1, 2, 5, 13])
def test_learning_curves_tick_whole_epochs_and_name_every_curve(epochs) -> None:
    history = pd.DataFrame({
        "epoch": np.arange(epochs), "train_loss": np.linspace(1, 0.5, epochs), "val_loss": np.linspace(1.2, 0.7, epochs),
        "val_pearson_mean": np.linspace(0.1, 0.6, epochs),
    })  # fmt: skip
    figure = learning_curves(history)
    figure.canvas.draw()
    for axes in figure.axes:
        ticks = _visible_ticks(axes)
        assert len(ticks) >= 1 and np.array_equal(ticks, np.round(ticks)), ticks
        for line in axes.lines:  # every epoch a visible marker, so one epoch is a point, not an invisible line
            assert line.get_marker() == "o" and line.get_markersize() > 0 and len(line.get_xdata()) == epochs
        assert [t.get_text() for t in axes.get_legend().get_texts()] == [line.get_label() for line in axes.lines]
    assert [t.get_text() for t in figure.axes[0].get_legend().get_texts()] == ["train loss", "val loss"]


def test_learning_curves_without_val_scores_say_so_instead_of_an_empty_axis() -> None:
    history = pd.DataFrame({"epoch": [0, 1], "train_loss": [1.0, 0.8], "val_loss": [np.nan] * 2, "val_pearson_mean": [np.nan] * 2})
    figure = learning_curves(history)
    losses, pearson = figure.axes
    assert [line.get_label() for line in losses.lines] == ["train loss"] and not pearson.lines
    assert "train+val" in pearson.texts[0].get_text()
