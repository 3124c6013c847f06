"""DVC experiments and plots on a tiny study, as the README's "Experiments" section tells a researcher to use them.

One git + DVC copy of the project reproduces the whole tiny study and commits it; then `dvc exp run -S` in the
workspace and `dvc exp run --queue` + `dvc queue start` (each experiment in a temporary copy under .dvc/tmp/exps)
change parameters that rerun only the cheap end of the pipeline. `dvc exp show --json` must give each experiment's
parameters and its headline metrics (results/report.json, git-tracked) as the experiment's commit holds them, and
every stage run must land in the project's MLflow store (a relative sqlite:///mlflow.db), not in a deleted copy.
`facetraits plots` must draw every plot of dvc.yaml from a page that loads nothing from the network.

The copy also holds a second study folder that was never run, as a fresh clone holds studies/omi (its dvc.lock and
committed headline, no outputs): being a DVC project of its own, it must leave every view of the default study
whole (plots, metrics with short keys, `dvc exp run` and `exp show`).
"""

from __future__ import annotations

import json
import re
import shutil
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import vl_convert
import yaml

from facetraits.cli import main
from facetraits.numbers import flat_metrics
from facetraits.studies import write_study_pipeline
from facetraits.tracking import TAG_STAGE
from facetraits.views import VEGA_LITE
from tests.conftest import REPO
from tests.dvc_project import copy_project, dvc, update_params

pytestmark = pytest.mark.slow

TINY_STUDY = {
    "data": {"image_size": 32, "attributes": ["happy", "dominant", "attractive"], "workers": 1,
             "synthetic": {"n_faces": 60}},
    "model": {"backbone": "resnet18", "head_hidden": 8, "trainable_blocks": 1},
    "train": {"max_epochs": 2, "batch_size": 16, "patience": 5, "progress_bar": False, "accelerator": "cpu"},
    "sweep": {"n_trials": 0},
    "explain": {"methods": ["gradcam"], "attributes": ["happy"], "gallery_faces": 1, "mean_faces": 4,
                "score_faces": 2, "curve_steps": 3},
    "baselines": {"reliability_repeats": 3, "handcrafted": {"c_grid": [1.0]}},
    "manifold": {"methods": ["pca"], "dims": [2], "permutations": 19, "folds": 3, "knn_neighbors": 3},
    "variants": {"imagenet_probe": {"model": {"backbone": "resnet18", "weights": "none"}}},
}  # fmt: skip
# The project's own default: a relative store, which a queued experiment's temporary copy must not capture.
RELATIVE_TRACKING = {"uri": "sqlite:///mlflow.db", "artifacts": "mlartifacts"}


def _ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def _git(project: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=project, check=True, capture_output=True, text=True).stdout


def _add_unrun_study(project: Path) -> Path:
    """studies/demo as a fresh clone has the real-face study: set up by `facetraits study-pipeline`, with a
    dvc.lock and a committed headline whose outputs are nowhere (studies/omi's files, never run here)."""
    demo = project / "studies" / "demo"
    for name in ("params.yaml", "dvc.lock", "results/report.json"):
        (demo / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / "studies" / "omi" / name, demo / name)
    write_study_pipeline(project, demo)
    return demo


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny study reproduced and committed (dvc.lock and the git-tracked headline), as after `make study`,
    beside a study folder that was never run."""
    root = tmp_path_factory.mktemp("dvc-exp")
    project = copy_project(root / "project", TINY_STUDY, root, scm=True)
    update_params(project, {"tracking": RELATIVE_TRACKING})
    _add_unrun_study(project)
    _git(project, "config", "user.email", "tests@facetraits.invalid")
    _git(project, "config", "user.name", "facetraits tests")
    _ok(dvc(project, "repro", timeout=1200))
    _git(project, "add", "-A")
    _git(project, "commit", "-qm", "tiny study")
    return project


def _experiments(project: Path) -> dict[str, dict[str, Any]]:
    """`dvc exp show --json` as {experiment name (or "workspace" / the baseline's branch): its data}."""
    shown = json.loads(_ok(dvc(project, "exp", "show", "--json")))
    rows: dict[str, dict[str, Any]] = {}
    for baseline in shown:
        rows[baseline.get("name") or baseline["rev"]] = baseline["data"]
        for experiment in baseline.get("experiments") or []:
            for revision in experiment["revs"]:
                rows[revision["name"]] = {**revision["data"], "rev": revision["rev"]}
    return rows


def _headline(metrics: dict[str, Any]) -> dict[str, float]:
    """The headline's numbers from DVC's metrics files mapping (DVC leaves nulls out)."""
    return flat_metrics(metrics["results/report.json"]["data"])


def _params(data: dict[str, Any]) -> dict[str, Any]:
    return data["params"]["params.yaml"]["data"]


def _finished_stage_runs(project: Path, since: float) -> list[str]:
    """The stage of every FINISHED MLflow run started after `since` (time.time()) in the project's store, sorted."""
    with sqlite3.connect(project / "mlflow.db") as db:
        query = (
            "select t.value from runs r join tags t on t.run_uuid = r.run_uuid"
            " where t.key = ? and r.status = 'FINISHED' and r.start_time >= ?"
        )
        return sorted(stage for (stage,) in db.execute(query, (TAG_STAGE, int(since * 1000))))


def test_study_headline_is_committed_and_shown_for_the_baseline(study: Path) -> None:
    """A clone shows the baseline's metrics: the headline is git-tracked, never "!" for lack of a DVC cache."""
    assert "results/report.json" in _git(study, "ls-files", "results")
    clone = study.parent / "clone"
    subprocess.run(["git", "clone", "-q", str(study), str(clone)], check=True)
    shown = json.loads(_ok(dvc(clone, "metrics", "show", "--json")))[""]
    committed = json.loads((study / "results" / "report.json").read_text())
    assert set(shown["data"]) == {"results/report.json"}, "the default study's headline only, not another study's"
    assert _headline(shown["data"]) == flat_metrics(committed)
    assert set(committed["test_r_mean"]) == {"main", "imagenet_probe", "handcrafted", "human_ceiling"}


def test_exp_run_set_param_records_params_and_the_headline(study: Path) -> None:
    before = json.loads((study / "results" / "report.json").read_text())
    started = time.time()
    _ok(dvc(study, "exp", "run", "-n", "softer-svr", "-S", "baselines.handcrafted.c_grid=[0.1]", timeout=900))

    after = json.loads((study / "results" / "report.json").read_text())
    experiment = _experiments(study)["softer-svr"]
    assert _params(experiment)["baselines"]["handcrafted"]["c_grid"] == [0.1]
    assert _headline(experiment["metrics"]) == flat_metrics(after), "exp show must hold the workspace's new headline"
    assert after["test_r_mean"]["handcrafted"] != before["test_r_mean"]["handcrafted"]
    assert after["test_r_mean"]["main"] == before["test_r_mean"]["main"], "only baselines and report reran"
    assert _finished_stage_runs(study, started) == ["baselines", "report"]
    # the README's readable view: one metrics file, so its keys carry no file prefix that --drop '.*/.*' would drop
    header = _ok(dvc(study, "exp", "show", "--csv", "--only-changed", "--drop", ".*/.*")).splitlines()[0].split(",")
    assert {"test_r_mean.handcrafted", "baselines.handcrafted.c_grid"} <= set(header), header


def test_an_unrun_study_folder_leaves_the_project_plots_and_metrics_whole(study: Path, tmp_path: Path) -> None:
    """DVC skips a nested DVC project: studies/demo's missing outputs and its headline stay out of the project's
    views (before, `dvc plots show` failed to load its plots and wrote no page, and every metric key got a prefix)."""
    assert (study / "studies" / "demo" / ".dvc" / "plots" / "curves.json").read_text() == (
        REPO / ".dvc" / "plots" / "curves.json"
    ).read_text()
    shown = dvc(study, "plots", "show", "-o", str(tmp_path / "page"))
    assert shown.returncode == 0 and "failed" not in shown.stdout + shown.stderr, shown.stderr
    assert (tmp_path / "page" / "index.html").is_file()
    assert _ok(dvc(study, "metrics", "show")).split()[:2] == ["Path", "explain.gradcam.deletion_auc"]


def test_queued_experiments_run_in_temporary_copies_and_log_to_the_project_store(study: Path) -> None:
    started = time.time()
    for k in (2, 5):
        _ok(dvc(study, "exp", "run", "--queue", "-n", f"knn-{k}", "-S", f"manifold.knn_neighbors={k}"))
    _ok(dvc(study, "queue", "start"))
    deadline = time.monotonic() + 900
    while True:
        status = _ok(dvc(study, "queue", "status"))
        if "Queued" not in status and "Running" not in status:
            break
        assert time.monotonic() < deadline, status
        time.sleep(5)
    assert status.count("Success") == 2, status

    experiments = _experiments(study)
    committed = {}
    for k in (2, 5):
        experiment = experiments[f"knn-{k}"]
        assert _params(experiment)["manifold"]["knn_neighbors"] == k
        # the headline exp show gives is the one committed in the experiment (git-tracked, cache: false)
        committed[k] = json.loads(_git(study, "show", f"{experiment['rev']}:results/report.json"))
        assert _headline(experiment["metrics"]) == flat_metrics(committed[k])
    assert committed[2]["manifold"]["knn_r"] != committed[5]["manifold"]["knn_r"]
    assert committed[2]["test_r_mean"] == committed[5]["test_r_mean"], "only manifold and report reran"

    assert _finished_stage_runs(study, started) == ["manifold", "manifold", "report", "report"]
    assert not list((study / ".dvc" / "tmp").rglob("mlflow.db")), "no store left in a temporary copy"


def _vega_specs(html: str) -> dict[str, dict[str, Any]]:
    """Each chart's Vega-Lite specification in a `dvc plots` page, by its div id (the plot id in dvc.yaml)."""
    decoder = json.JSONDecoder()
    specs = {}
    for match in re.finditer(r'<div id = "([^"]+)">\s*<script type = "text/javascript">\s*var spec = ', html):
        specs[match.group(1)] = decoder.raw_decode(html, match.end())[0]
    return specs


def test_facetraits_plots_renders_every_declared_chart_with_no_network(study: Path, monkeypatch) -> None:
    monkeypatch.chdir(study)
    assert main(["plots", "--out", "offline"]) == 0
    page = study / "offline" / "index.html"
    html = page.read_text()
    assert not re.search(r"<script[^>]*\ssrc\s*=", html) and "cdn.jsdelivr" not in html
    head, body = html.rsplit("</head>", 1)  # the inlined library's own text holds "</head>" too
    assert "window.vegaEmbed=" in head, "the chart library is inlined in the page's head"

    declared = yaml.safe_load((study / "dvc.yaml").read_text())["plots"]
    curves = {name: spec for plot in declared if isinstance(plot, dict) for name, spec in plot.items()}
    specs = _vega_specs(body)
    assert set(specs) == set(curves)
    for name, spec in specs.items():
        assert spec["title"]["text"] == curves[name]["title"]
        assert spec["encoding"]["x"]["title"] == curves[name]["x_label"]
        assert spec["encoding"]["y"]["title"] == curves[name]["y_label"]
        svg = vl_convert.vegalite_to_svg(spec, vl_version=VEGA_LITE)  # the inlined library version draws it
        assert curves[name]["title"] in svg and curves[name]["y_label"] in svg
    for name in ("train_loss", "val_loss", "val_pearson_mean"):
        files = {row["filename"] for row in specs[name]["data"]["values"]}
        assert files == {"train/history.csv", "variants/imagenet_probe/history.csv"}, "main and variant side by side"
        svg = vl_convert.vegalite_to_svg(specs[name], vl_version=VEGA_LITE)
        labels = re.findall(r"<text[^>]*>([^<]*)</text>", svg)
        assert {"main", "imagenet_probe"} <= set(labels) and not any("history.csv" in label for label in labels)
        rows = specs[name]["data"]["values"]
        assert svg.count('aria-roledescription="point"') == len(rows), "a point at every epoch of every model"
        x_axis = svg[svg.index("X-axis titled") : svg.index("Y-axis titled")]
        ticks = re.findall(r'role-axis-label".*?</g>', x_axis)[0]
        epochs = sorted({int(row["epoch"]) for row in rows})
        assert re.findall(r"<text[^>]*>([^<]*)</text>", ticks) == [str(e) for e in epochs], "ticks at whole epochs"
    by_attribute = specs["val_pearson_by_attribute"]["data"]["values"]
    assert {row["attribute"] for row in by_attribute} == set(TINY_STUDY["data"]["attributes"])
    assert {int(row["epoch"]) for row in by_attribute} == set(range(TINY_STUDY["train"]["max_epochs"]))

    images = [study / plot for plot in declared if isinstance(plot, str)]
    pngs = [png for path in images for png in ([path] if path.is_file() else sorted(path.rglob("*.png")))]
    sources = re.findall(r'<img src="([^"]+)"', body)
    assert len(sources) == len(pngs) > 0
    assert all((page.parent / source).is_file() for source in sources)
