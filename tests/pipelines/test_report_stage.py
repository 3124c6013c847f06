"""Baselines, a variant and the report on the tiny study: every number in the report is the metrics files' number."""

import json
import re
import shutil

import numpy as np
import pandas as pd
import pytest
import yaml

from facetraits.numbers import flat_metrics
from facetraits.report.headline import EXPLAIN_SCORES
from facetraits.report.study import HANDCRAFTED
from tests.pipelines.conftest import _stage_run, stage, stage_args

pytestmark = pytest.mark.slow

MAIN, VARIANT, ENSEMBLE = "VGG16-BN", "VGG16-BN, no_augment", "ensemble of main + no_augment"
MANIFOLD = {"methods": ["pca"], "dims": [2], "permutations": 19}  # the report reads its scores; cheap maps suffice


@pytest.fixture(scope="module")
def reported(explained, ensembled) -> dict:
    results = ensembled["results"]
    assert stage("baselines")([*stage_args(explained, "prepared"), "--out", str(results / "baselines")]) == 0
    params = yaml.safe_load((explained["root"] / "params.yaml").read_text())
    params["manifold"] = MANIFOLD
    params["tracking"]["experiment"] = "report-manifold"  # the manifold tests expect their stage's run alone
    manifold_params = explained["root"] / "params_report_manifold.yaml"
    manifold_params.write_text(yaml.safe_dump(params))
    paths = ["--prepared", str(explained["prepared"]), "--train", str(explained["out"])]
    assert stage("manifold")(["--params", str(manifold_params), *paths, "--out", str(results / "manifold")]) == 0
    assert stage("report")([*stage_args(explained, "prepared"), "--results", str(results)]) == 0
    return {**explained, "results": results}


def _markdown_table(text: str) -> pd.DataFrame:
    """The report's first table (the comparison), cells unescaped and unbolded, each cell's estimate without its
    interval, "—" as NaN."""
    lines = text[text.index("\n|") + 1 :].split("\n\n")[0].splitlines()
    header = [cell.strip().replace("\\", "") for cell in lines[0].strip("|").split("|")]
    rows = [
        [cell.strip().strip("*").replace("\\", "").split(" [")[0] for cell in line.strip("|").split("|")]
        for line in lines[2:]
    ]
    table = pd.DataFrame(rows, columns=header).set_index(header[0])
    return table.replace("—", "nan").astype(float)


def test_every_number_in_the_report_table_is_the_one_in_its_metrics_file(reported) -> None:
    results = reported["results"]
    baselines = json.loads((results / "baselines" / "metrics.json").read_text())
    methods = {
        HANDCRAFTED: baselines["handcrafted"]["test"]["pearson"],
        MAIN: json.loads((results / "train" / "metrics.json").read_text())["test"]["pearson"],
        VARIANT: json.loads((results / "variants" / "no_augment" / "metrics.json").read_text())["test"]["pearson"],
        ENSEMBLE: json.loads((results / "ensemble" / "metrics.json").read_text())["test"]["pearson"],
    }
    attributes = ["happy", "dominant", "attractive"]
    human = baselines["human"]
    # Each column's per-attribute values as the files hold them (null r is NaN), computed here without the library.
    ceiling = np.array([human["ceiling"][a] for a in attributes], dtype=float)
    columns = {"human reliability": np.array([human["reliability"][a] for a in attributes], dtype=float)}
    columns["human ceiling"] = ceiling
    columns |= {m: np.array([scores[a] for a in attributes], dtype=float) for m, scores in methods.items()}
    columns |= {f"{m} r/ceiling": columns[m] / np.where(ceiling > 0, ceiling, np.nan) for m in methods}
    table = _markdown_table((results / "report.md").read_text())
    assert list(table.index) == [*attributes, "mean"] and list(table.columns) == list(columns)
    means = {column: np.nanmean(values) if np.isfinite(values).any() else np.nan for column, values in columns.items()}
    for column, values in columns.items():
        for attribute, value in zip(attributes, values, strict=True):
            np.testing.assert_equal(table.loc[attribute, column], round(value, 2), err_msg=f"{attribute}, {column}")
        np.testing.assert_equal(table.loc["mean", column], round(means[column], 2), err_msg=f"mean, {column}")
    report = json.loads((results / "report.json").read_text())
    keys = {HANDCRAFTED: "handcrafted", MAIN: "main", VARIANT: "no_augment", ENSEMBLE: "ensemble", "human ceiling": "human_ceiling"}
    assert report["test_r_mean"] == pytest.approx({key: means[column] for column, key in keys.items()}, abs=1e-6)


def test_report_json_is_a_headline_of_a_few_dozen_numbers_from_the_stages_files(reported) -> None:
    """What `dvc metrics show` and `dvc exp show` print: method means, p-values, explain and manifold summaries."""
    results = reported["results"]
    report = json.loads((results / "report.json").read_text())
    explain = json.loads((results / "explain" / "scores.json").read_text())["mean"]
    assert report["explain"] == {
        method: {name: scores[name] for name in EXPLAIN_SCORES if name in scores} for method, scores in explain.items()
    }
    manifold = json.loads((results / "manifold" / "metrics.json").read_text())
    assert report["manifold"]["agreement_r"] == manifold["agreement"]["pearson"]
    assert report["manifold"]["agreement_mantel_p"] == manifold["agreement"]["mantel_p"]
    for source, knn in report["manifold"]["knn_r"].items():  # one 2-D PCA map per source: its own mean
        assert knn == pytest.approx(manifold["maps"][source]["pca"]["2d"]["knn_r_mean"], abs=1e-6)
    assert set(report["manifold"]["knn_r"]) == {"features", "predicted", "human"}
    assert set(report["p"]) == {"anova", "friedman"} and all(0 <= p <= 1 for p in report["p"].values())
    assert 20 <= len(flat_metrics(report)) <= 40


def test_report_refuses_a_stale_metrics_file_naming_it(reported, tmp_path, capsys) -> None:
    """Scores for an attribute the prepared data lacks mean the file predates the data: an error, not a drop."""
    inputs = ("baselines/metrics.json", "variants/no_augment/metrics.json", "ensemble/metrics.json", "ensemble/weights.json",
              "explain/scores.json", "manifold/metrics.json")  # fmt: skip
    for name in inputs:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(reported["results"] / name, tmp_path / name)
    train = json.loads((reported["results"] / "train" / "metrics.json").read_text())
    train["test"]["pearson"]["smug"] = 0.5
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "metrics.json").write_text(json.dumps(train))
    assert stage("report")([*stage_args(reported, "prepared"), "--results", str(tmp_path)]) == 1
    error = capsys.readouterr().err
    assert f"error: {tmp_path / 'train' / 'metrics.json'}: method '{MAIN}' has scores for attributes" in error
    assert "not in the report: ['smug']; the file is stale" in error
    assert not (tmp_path / "report.md").exists()


def test_report_names_its_tests_links_figures_and_exists_as_html(reported) -> None:
    results = reported["results"]
    markdown = (results / "report.md").read_text()
    assert "one-way ANOVA" in markdown and "Friedman" in markdown and "Wilcoxon" in markdown
    assert "explain/mean_heatmaps.png" in markdown and "report_figures/bar_chart.png" in markdown
    html = (results / "report.html").read_text()
    assert "<table" in html and not re.search(r"(src|href)=\"https?://", html)
    assert (results / "report_figures" / "bar_chart.png").stat().st_size > 1000
    run = _stage_run(reported, "report")
    artifacts = {a.path for a in reported["client"].list_artifacts(run.info.run_id, "report")}
    assert {"report/report.md", "report/report.html", "report/report.json", "report/intervals.csv"} <= artifacts
    report = json.loads((results / "report.json").read_text())
    for key, r in report["test_r_mean"].items():
        if key != "human_ceiling":
            assert report["test_r_mean_ci_low"][key] < r < report["test_r_mean_ci_high"][key]
    assert run.data.metrics["report/mean_r/vgg16_bn"] == pytest.approx(report["test_r_mean"]["main"], abs=1e-6)


def test_baselines_stage_scores_the_svr_on_test_faces_and_logs_reliability(reported) -> None:
    results = reported["results"]
    metrics = json.loads((results / "baselines" / "metrics.json").read_text())
    predictions = pd.read_csv(results / "baselines" / "handcrafted_predictions.csv")
    test = predictions[(predictions["split"] == "test") & (predictions["attribute"] == "happy")]
    r = np.corrcoef(test["human"], test["predicted"])[0, 1]
    assert metrics["handcrafted"]["test"]["pearson"]["happy"] == pytest.approx(r, abs=1e-5)
    reliability = pd.read_csv(results / "baselines" / "reliability.csv", index_col="attribute")
    assert ((reliability["reliability"] > 0.5) & (reliability["reliability"] <= 1)).all()
    run = _stage_run(reported, "baselines")
    assert run.data.metrics["human/reliability_mean"] == metrics["human"]["reliability_mean"]
    flat = flat_metrics(metrics)
    shared_keys = {key.removeprefix("handcrafted/"): value for key, value in flat.items() if "/val/" in key or "/test/" in key}
    assert shared_keys["test/pearson/happy"] == metrics["handcrafted"]["test"]["pearson"]["happy"]
    assert {key: run.data.metrics[key] for key in shared_keys} == shared_keys, "under the trained models' keys"
    others = {key: value for key, value in flat.items() if not ("/val/" in key or "/test/" in key)}
    assert {key: run.data.metrics[key] for key in others} == others
    assert len(run.data.metrics) == len(flat), "every number of metrics.json, once"


def test_a_variant_trains_with_its_changes_and_is_tagged(reported) -> None:
    run = _stage_run(reported, "variant@no_augment")
    assert run.data.params["train.augment.strength"] == "0.0" and run.data.params["train.max_epochs"] == "1"
    assert run.data.tags["facetraits.variant"] == "no_augment"
    assert (reported["root"] / "variants" / "no_augment" / "models" / "best.ckpt").is_file()


def test_report_refuses_a_missing_metrics_file_naming_it(trained, tmp_path, capsys) -> None:
    assert stage("report")([*stage_args(trained, "prepared"), "--results", str(tmp_path)]) == 1
    assert f"{tmp_path / 'baselines' / 'metrics.json'}: metrics file not found" in capsys.readouterr().err
