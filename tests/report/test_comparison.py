import math

import numpy as np
import pandas as pd
import pytest

from facetraits.errors import DataError
from facetraits.report.comparison import (
    HUMAN_CEILING,
    HUMAN_RELIABILITY,
    MEAN_ROW,
    comparison_table,
    ratio_column,
)

ATTRIBUTES = ["happy", "trustworthy", "dominant", "attractive", "smart"]


def sources(seed: int = 0) -> tuple[pd.DataFrame, dict[str, dict[str, float]]]:
    """Unrounded floats, as metrics files hold them; one method lacks an attribute."""
    rng = np.random.default_rng(seed)
    human = pd.DataFrame(
        {"reliability": rng.uniform(0.5, 0.95, 5), "ceiling": rng.uniform(0.6, 0.98, 5)}, index=ATTRIBUTES
    )
    methods = {
        "Hand-crafted (LBP+HOG+colour SVR)": dict(zip(ATTRIBUTES, rng.uniform(0.1, 0.5, 5).tolist())),
        "VGG16": dict(zip(ATTRIBUTES, rng.uniform(0.3, 0.8, 5).tolist())),
        "VGG16, per attribute": dict(zip(ATTRIBUTES[:3], rng.uniform(0.3, 0.8, 3).tolist())),
    }
    return human, methods


def test_cells_are_the_source_floats_exactly() -> None:
    human, methods = sources()
    table = comparison_table(human, methods, ATTRIBUTES)
    for attribute in ATTRIBUTES:
        assert table.loc[attribute, HUMAN_RELIABILITY] == human.loc[attribute, "reliability"]
        assert table.loc[attribute, HUMAN_CEILING] == human.loc[attribute, "ceiling"]
        for method, scores in methods.items():
            if attribute in scores:
                assert table.loc[attribute, method] == scores[attribute]
                assert table.loc[attribute, ratio_column(method)] == scores[attribute] / human.loc[attribute, "ceiling"]
            else:
                assert math.isnan(table.loc[attribute, method])
                assert math.isnan(table.loc[attribute, ratio_column(method)])


def test_layout_rows_in_given_order_then_mean_and_columns_human_methods_ratios() -> None:
    human, methods = sources()
    order = ATTRIBUTES[::-1]
    table = comparison_table(human, methods, order)
    assert list(table.index) == [*order, MEAN_ROW]
    assert list(table.columns) == [
        HUMAN_RELIABILITY,
        HUMAN_CEILING,
        *methods,
        *(f"{method} r/ceiling" for method in methods),
    ]


def test_mean_row_averages_only_the_attributes_with_a_value() -> None:
    human, methods = sources()
    table = comparison_table(human, methods, ATTRIBUTES)
    partial = "VGG16, per attribute"
    assert table.loc[MEAN_ROW, partial] == pytest.approx(np.mean(list(methods[partial].values())), abs=1e-15)
    assert table.loc[MEAN_ROW, "VGG16"] == pytest.approx(np.mean(list(methods["VGG16"].values())), abs=1e-15)
    ratios = [methods["VGG16"][a] / human.loc[a, "ceiling"] for a in ATTRIBUTES]
    assert table.loc[MEAN_ROW, ratio_column("VGG16")] == pytest.approx(np.mean(ratios), abs=1e-15)


def test_ratio_is_missing_where_the_ceiling_is_missing_or_not_positive() -> None:
    human, methods = sources()
    human.loc["happy", "ceiling"] = 0.0
    human = human.drop(index="smart")
    table = comparison_table(human, methods, ATTRIBUTES)
    assert math.isnan(table.loc["happy", ratio_column("VGG16")])
    assert math.isnan(table.loc["smart", HUMAN_CEILING])
    assert math.isnan(table.loc["smart", ratio_column("VGG16")])
    assert table.loc["dominant", ratio_column("VGG16")] > 0


def test_without_human_ratings_the_table_has_only_method_columns() -> None:
    _, methods = sources()
    table = comparison_table(None, methods, ATTRIBUTES)
    assert list(table.columns) == list(methods)
    assert table.loc["trustworthy", "VGG16"] == methods["VGG16"]["trustworthy"]


@pytest.mark.parametrize(
    ("methods", "attributes", "message"),
    [
        ({"VGG16": {"happy": 0.5, "sad": 0.2}}, ["happy"], "'VGG16'.*'sad'"),
        ({"VGG16": {"happy": 1.5}}, ["happy"], "'VGG16', attribute 'happy'.*outside"),
        ({"VGG16": {"happy": 0.5}}, ["happy", "happy"], "twice.*happy"),
        ({"VGG16": {"happy": 0.5}}, ["happy", "mean"], "mean row"),
        ({"human ceiling": {"happy": 0.5}}, ["happy"], "clash"),
    ],
)
def test_bad_input_names_what_is_wrong(
    methods: dict[str, dict[str, float]], attributes: list[str], message: str
) -> None:
    human = pd.DataFrame({"reliability": [0.8], "ceiling": [0.9]}, index=["happy"])
    with pytest.raises(DataError, match=message):
        comparison_table(human, methods, attributes)


def test_human_table_without_a_ceiling_column_is_rejected() -> None:
    with pytest.raises(DataError, match="ceiling"):
        comparison_table(pd.DataFrame({"reliability": [0.8]}, index=["happy"]), {"VGG16": {"happy": 0.5}}, ["happy"])


def test_errors_name_the_metrics_file_a_method_came_from() -> None:
    human = pd.DataFrame({"reliability": [0.8], "ceiling": [0.9]}, index=["happy"])
    sources = {"VGG16": "results/train/metrics.json"}
    with pytest.raises(DataError, match=r"^results/train/metrics.json: method 'VGG16'.*\['sad'\]; the file is stale"):
        comparison_table(human, {"VGG16": {"happy": 0.5, "sad": 0.2}}, ["happy"], sources)
    with pytest.raises(DataError, match=r"^results/train/metrics.json: method 'VGG16', attribute 'happy'.*outside"):
        comparison_table(human, {"VGG16": {"happy": -1.5}}, ["happy"], sources)
