import io
import json
import re

import numpy as np
import pandas as pd
import pytest

from facetraits.errors import DataError
from facetraits.manifold.figures import (
    correlation_heatmap,
    embedding_3d,
    embedding_grid,
    interactive_scatter_html,
    label_scatter,
)

ROWS = 60


def ratings(columns: list[str]) -> pd.DataFrame:
    values = pd.DataFrame(np.random.default_rng(0).normal(size=(ROWS, len(columns))), columns=columns)
    values.iloc[3, 0] = np.nan
    return values


def coords(dims: int = 2) -> np.ndarray:
    return np.random.default_rng(1).normal(size=(ROWS, dims))


def test_grid_has_one_panel_per_attribute_and_one_colour_bar() -> None:
    names = ["happy", "unhappy", "trustworthy", "dominant", "attractive"]
    figure = embedding_grid(coords(), ratings(names), "human ratings, t-SNE")
    panels = [axes for axes in figure.axes if axes.get_label() != "<colorbar>"]
    assert [axes.get_title() for axes in panels] == names
    assert len(figure.axes) == len(names) + 1
    assert sum(len(collection.get_offsets()) for collection in panels[0].collections) == ROWS
    figure.savefig(io.BytesIO(), format="png", dpi=40)


def test_label_scatter_has_one_panel_per_label_with_counts() -> None:
    labels = pd.DataFrame(
        {
            "happy_vs_unhappy": pd.array([True, False] * 29 + [pd.NA] * 2, dtype="boolean"),
            "age_vs_median": pd.array([True] * 20 + [False] * 40, dtype="boolean"),
        }
    )
    figure = label_scatter(coords(), labels, "labels")
    assert [axes.get_title() for axes in figure.axes] == ["happy > unhappy", "age > median"]
    legend = [text.get_text() for text in figure.axes[0].get_legend().get_texts()]
    assert legend == ["no (29)", "yes (29)", "unrated (2)"]


def test_3d_map_and_heatmap_render() -> None:
    colour = ratings(["happy"])["happy"].to_numpy()
    figure = embedding_3d(coords(3), colour, "3-D")
    assert figure.axes[0].name == "3d" and len(figure.axes) == 2
    corr = ratings(["a", "b", "c"]).corr()
    heatmap = correlation_heatmap(corr, ["c", "a", "b"], "r")
    assert [label.get_text() for label in heatmap.axes[0].get_xticklabels()] == ["c", "a", "b"]
    np.testing.assert_allclose(heatmap.axes[0].images[0].get_array(), corr.loc[["c", "a", "b"], ["c", "a", "b"]])
    heatmap.savefig(io.BytesIO(), format="png", dpi=40)


def test_html_page_is_self_contained_and_complete() -> None:
    ids = [f"face{i:03d}" for i in range(ROWS)]
    ids[5] = "</script><b>x"
    names = ["happy", "well-groomed", "age"]
    page = interactive_scatter_html(coords(), ids, ratings(names), "human <t-SNE>")
    assert "http://" not in page and "https://" not in page
    assert "</script><b>x" not in page
    assert "human &lt;t-SNE&gt;" in page
    data = json.loads(re.search(r"const data = (.*);\n", page).group(1))
    assert data["ids"] == ids
    assert list(data["values"]) == names and data["values"]["happy"][3] is None
    assert all(f"<option>{name}</option>" in page for name in names)


def test_figures_refuse_mismatched_shapes() -> None:
    with pytest.raises(DataError, match="coords"):
        embedding_grid(coords()[:-1], ratings(["happy"]), "x")
    with pytest.raises(DataError, match="rows"):
        interactive_scatter_html(coords(), [str(i) for i in range(ROWS)], ratings(["happy"]).iloc[:-1], "x")
