"""The report stage's inputs and outputs: the stages' metrics files in, report.md / report.html / report.json out."""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from facetraits.baselines.reliability import SPLIT_HALVES_FILE, read_split_halves
from facetraits.config import ReportParams, StudyParams, TrackingParams, variant_params
from facetraits.data.prepared import PreparedData, read_predictions
from facetraits.data.sources.base import NA_OPTIONS
from facetraits.errors import DataError
from facetraits.figures import save_figure
from facetraits.files import atomic_directory, atomic_write_json, atomic_write_text
from facetraits.models.backbone_labels import BACKBONE_LABELS
from facetraits.models.ensemble import WEIGHTS_FILE
from facetraits.report.comparison import HUMAN_CEILING, MEAN_ROW, comparison_table
from facetraits.report.headline import ENSEMBLE_KEY, HANDCRAFTED_KEY, MAIN, MEAN_R_INTERVAL_KEYS, headline, read_metrics
from facetraits.report.intervals import BootstrapSettings, CeilingFaces, Intervals, bootstrap_intervals
from facetraits.report.render import bar_chart, opening_summary, render_html, render_markdown
from facetraits.report.statistics import MethodComparison, compare_methods
from facetraits.spreadsheet import write_csv
from facetraits.stage_result import StageResult
from facetraits.tracking import StageRun, experiment_page, flatten_params, metric_key

REPORT_OUTPUTS = ("report.md", "report.html", "report.json", "report_figures")  # under results/, as in dvc.yaml
HANDCRAFTED = "Hand-crafted (colour + LBP + HOG, SVR)"


def pearson_scores(metrics: Mapping[str, Any], path: Path, section: tuple[str, ...] = ("test",)) -> dict[str, float]:
    """{attribute: test r} from a train or baselines metrics file, naming the file if it is not shaped like one."""
    node: Any = metrics
    for key in (*section, "pearson"):
        if not isinstance(node, Mapping) or key not in node:
            raise DataError(f"{path}: no {'.'.join((*section, 'pearson'))} section")
        node = node[key]
    return {a: math.nan if r is None else float(r) for a, r in node.items()}


def human_reference(baselines: Mapping[str, Any]) -> pd.DataFrame | None:
    human = baselines.get("human", {})
    if "reliability" not in human:
        return None
    table = pd.DataFrame({"reliability": human["reliability"], "ceiling": human["ceiling"]}, dtype=float)
    table.index.name = "attribute"
    return table


@dataclass(frozen=True)
class MethodScores:
    """Test r per attribute of each method (by report label), the metrics file each came from for errors, and the
    predictions file its intervals are resampled from."""

    scores: dict[str, dict[str, float]]
    files: dict[str, Path]
    predictions: dict[str, Path]


@dataclass(frozen=True)
class Report:
    table: pd.DataFrame
    comparison: MethodComparison
    human: pd.DataFrame | None
    methods: dict[str, dict[str, float]]
    intervals: Intervals | None = None


def build_report(
    attributes: Sequence[str],
    human: pd.DataFrame | None,
    methods: MethodScores,
    data: PreparedData | None = None,
    settings: BootstrapSettings | None = None,
    split_halves: np.ndarray | None = None,
) -> Report:
    """The table and its tests; a score for an attribute the prepared data lacks is an error naming its file.
    With `data` and `settings`, bootstrap intervals over its test faces from each method's predictions file, and with
    the ceiling's `split_halves` (every prepared face's, from the baselines stage) r/ceiling's resample it too. The
    file and the metrics come from one run of one stage (DVC reruns both or neither); under bf16 its r can differ
    from the test loop's in the third decimal (other batch compositions), so the two are not compared."""
    sources = {name: str(path) for name, path in methods.files.items()}
    table = comparison_table(human, methods.scores, attributes, sources)
    intervals = None
    if data is not None and settings is not None:
        rows = data.indices("test")
        ratings = data.faces[list(attributes)].to_numpy(dtype=np.float64)[rows]
        ids = data.faces["id"].to_numpy()[rows]
        predicted = {m: read_predictions(path, ids, attributes) for m, path in methods.predictions.items()}
        ceiling = None if human is None else human["ceiling"]
        faces = None if split_halves is None or human is None else CeilingFaces(split_halves, rows)
        intervals = bootstrap_intervals(table, ratings, predicted, ceiling, settings, faces)
    return Report(table, compare_methods(methods.scores, attributes), human, dict(methods.scores), intervals)


def report_metrics(
    report: Report, keys: Mapping[str, str], explain_scores: Mapping[str, Any], manifold: Mapping[str, Any]
) -> dict[str, Any]:
    """results/report.json, the headline `dvc metrics show` compares; `keys`: each method's label -> its key."""
    mean_row = report.table.loc[MEAN_ROW]
    intervals = None
    if report.intervals is not None:
        low, high = report.intervals.low.loc[MEAN_ROW], report.intervals.high.loc[MEAN_ROW]
        intervals = {keys[method]: (low[method], high[method]) for method in report.methods}
    return headline(
        {keys[method]: mean_row[method] for method in report.methods},
        mean_row[HUMAN_CEILING] if report.human is not None else None,
        {"anova": report.comparison.anova.p_value, "friedman": report.comparison.friedman.p_value},
        explain_scores,
        manifold,
        intervals,
    )


def write_report(
    report: Report,
    title: str,
    links: Sequence[tuple[str, str]],
    notes: Sequence[str],
    metrics: Mapping[str, Any],
    results_dir: Path,
    summary: str = "",
    explanation: Mapping[str, Mapping[str, float | None]] | None = None,
    regions: pd.DataFrame | None = None,
) -> list[Path]:
    """report.md, report.html and report.json (`metrics`) in results_dir, the bar chart under report_figures;
    `summary` opens the report, `explanation` (scores.json's per-method means) is its attribution table, `regions`
    (explain's region_importance.csv) its face-region table."""
    results_dir = Path(results_dir)
    with atomic_directory(results_dir / "report_figures") as figures:  # a whole new folder: no stale figures
        chart = bar_chart(report.table, list(report.methods), report.human, report.intervals)
        save_figure(chart, figures / "bar_chart.png")
    chart_path = results_dir / "report_figures" / "bar_chart.png"
    links = [("Test Pearson r per attribute and method", str(chart_path.relative_to(results_dir))), *links]
    written = [chart_path]
    content = {"intervals": report.intervals, "summary": summary, "explanation": explanation, "regions": regions}
    for name, text in (
        ("report.md", render_markdown(title, report.table, report.comparison, links, notes, **content)),
        ("report.html", render_html(title, report.table, report.comparison, links, notes, results_dir, **content)),
    ):
        atomic_write_text(results_dir / name, text)
        written.append(results_dir / name)
    atomic_write_json(results_dir / "report.json", metrics)
    return [*written, results_dir / "report.json"]


def collect_methods(
    results: Path, main_label: str, variant_labels: Mapping[str, str], ensemble_label: str | None = None
) -> MethodScores:
    """Test r per attribute of the hand-crafted baseline, the main model, each variant and the ensemble (when
    there is one), from their metrics files."""
    folders = {
        HANDCRAFTED: results / "baselines",
        main_label: results / "train",
        **{label: results / "variants" / name for name, label in variant_labels.items()},
        **({ensemble_label: results / "ensemble"} if ensemble_label else {}),
    }
    sections = {label: ("test",) for label in folders} | {HANDCRAFTED: ("handcrafted", "test")}
    files = {label: folder / "metrics.json" for label, folder in folders.items()}
    scores = {label: pearson_scores(read_metrics(path), path, sections[label]) for label, path in files.items()}
    predictions = {label: folder / "predictions.csv" for label, folder in folders.items()}
    predictions[HANDCRAFTED] = results / "baselines" / "handcrafted_predictions.csv"
    return MethodScores(scores, files, predictions)


def report_notes(data: PreparedData, baselines: Mapping[str, Any], refitted: Sequence[str] = ()) -> list[str]:
    """`refitted`: the methods fitted on the train and val faces (train.fit_on: train+val)."""
    counts = ", ".join(f"{split} {len(data.indices(split))}" for split in ("train", "val", "test"))
    size = data.images.shape[1]
    notes = [
        f"Data: {data.meta['source']}, {len(data.faces)} faces ({counts}), {len(data.attributes)} attributes, {size} px."
    ]
    notes.append("Every r is on the test split.")
    if refitted:
        notes.append(
            f"Fitted on the train and val faces once val had chosen their settings (train.fit_on: train+val): "
            f"{', '.join(refitted)}."
        )
    if "skipped" in baselines.get("human", {}):
        notes.append(baselines["human"]["skipped"])
    return notes


def report_links(results: Path, explain_scores: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Paths relative to results/, where report.md and report.html live; each gallery is a figure, so the
    HTML embeds it and shows it wherever it is opened."""
    links = [("Mean attribution maps", "explain/mean_heatmaps.png")]
    for attribute in explain_scores["attributes"]:
        galleries = sorted((results / "explain" / attribute).glob("*/gallery.png"))
        links += [
            (f"Heatmap gallery: {attribute}, {p.parent.name.replace('_', ' ')}", str(p.relative_to(results)))
            for p in galleries
        ]
    manifold = sorted((results / "manifold").rglob("*.png")) + sorted((results / "manifold").rglob("*.html"))
    links += [(f"Manifold: {p.stem.replace('_', ' ')}", str(p.relative_to(results))) for p in manifold]
    return links


def study_headline_params(params: StudyParams, data: PreparedData) -> dict[str, str]:
    """What a study is, in a few params for its parent run (the runs list's columns), with params.yaml's names."""
    knobs = flatten_params({"data": params.data, "model": params.model, "train": params.train})
    chosen = ("data.source", "data.image_size", "model.backbone", "model.weights", "train.protocol",
              "train.max_epochs", "train.lr")  # fmt: skip
    return {
        **{key: knobs[key] for key in chosen},
        "faces": str(len(data.faces)),
        "attributes": str(len(data.attributes)),
        "variants": ", ".join(params.variants) or "none",
    }


def study_headline_metrics(metrics: Mapping[str, Any]) -> dict[str, float | None]:
    """report.json's mean test r of each method and the human ceiling, under its keys (`test_r_mean/main`), and the
    mean r's interval ends (`test_r_mean_ci_low/main`)."""
    sections = [name for name in ("test_r_mean", *MEAN_R_INTERVAL_KEYS) if name in metrics]
    return {f"{name}/{key}": value for name in sections for key, value in metrics[name].items()}


def bootstrap_settings(params: ReportParams) -> BootstrapSettings:
    return BootstrapSettings(resamples=params.bootstrap_resamples, level=params.confidence, seed=params.seed)


def interval_table(report: Report) -> str:
    """Every interval of the report as one CSV for MLflow: per attribute and mean row, each method's r and
    r/ceiling, and each pair's difference."""
    assert report.intervals is not None
    cells = pd.concat(
        {"estimate": report.table, "low": report.intervals.low, "high": report.intervals.high}, axis=1
    ).stack(level=1, future_stack=True)
    cells = cells.dropna(subset=["low", "high"], how="all").rename_axis(["attribute", "quantity"]).reset_index()
    differences = report.intervals.differences.rename(columns={"difference": "estimate"})
    differences.insert(1, "quantity", "r difference: " + differences.pop("first") + " - " + differences.pop("second"))
    text = io.StringIO()  # through the one writer: an attribute or variant named "=..." stays text in a spreadsheet
    write_csv(pd.concat([cells, differences], ignore_index=True), text, index=False, float_format="%.6g")
    return text.getvalue()


def report_stage(data: PreparedData, params: StudyParams, results: Path, run: StageRun | None = None) -> StageResult:
    """The report stage: every method's test scores from the other stages' metrics files, compared and written;
    the report says where the study's MLflow runs are, and the study's parent run gets its headline."""
    variant_labels = {
        name: f"{BACKBONE_LABELS[variant_params(params, name).model.backbone]}, {name}" for name in params.variants
    }
    ensemble_label = f"ensemble of {' + '.join(params.ensemble.members)}" if params.ensemble.members else None
    methods = collect_methods(results, BACKBONE_LABELS[params.model.backbone], variant_labels, ensemble_label)
    baselines = read_metrics(results / "baselines" / "metrics.json")
    explain_scores = read_metrics(results / "explain" / "scores.json")
    manifold = read_metrics(results / "manifold" / "metrics.json")
    halves = read_split_halves(results / "baselines" / SPLIT_HALVES_FILE, len(data.faces), len(data.attributes))
    settings = bootstrap_settings(params.report)
    report = build_report(data.attributes, human_reference(baselines), methods, data, settings, halves)
    refits = {label: params.train.refits_on_val for label in (BACKBONE_LABELS[params.model.backbone], HANDCRAFTED)}
    refits |= {label: variant_params(params, name).train.refits_on_val for name, label in variant_labels.items()}
    refitted = [label for label, refit in refits.items() if refit]
    where = mlflow_runs_note(params.tracking, run.experiment_id) if run is not None and run.study is not None else []
    ensemble = [ensemble_note(read_metrics(results / "ensemble" / WEIGHTS_FILE))] if ensemble_label else []
    notes = [*report_notes(data, baselines, refitted), *ensemble, *where]
    keys = {BACKBONE_LABELS[params.model.backbone]: MAIN, HANDCRAFTED: HANDCRAFTED_KEY}
    keys |= {label: name for name, label in variant_labels.items()}
    keys |= {ensemble_label: ENSEMBLE_KEY} if ensemble_label else {}
    metrics = report_metrics(report, keys, explain_scores, manifold)
    links = report_links(results, explain_scores)
    main = BACKBONE_LABELS[params.model.backbone]
    summary = opening_summary(report.table, report.intervals, main, [m for m in report.methods if m != main])
    written = write_report(
        report, params.report.title, links, notes, metrics, results, summary, explain_scores["mean"],
        read_region_table(results / "explain" / "region_importance.csv"),
    )
    if run is not None:
        run.log_to_study(study_headline_metrics(metrics), study_headline_params(params, data))
    means = report.table.loc[MEAN_ROW, list(report.methods)]
    artifacts = [(path, "report" if path.parent == results else "report/figures") for path in written]
    anova = report.comparison.anova
    printed = (
        f"mean test r: {', '.join(f'{m} {means[m]:.3f}' for m in report.methods)}; "
        f"{anova.test} p = {anova.p_value:.3g} -> {results / 'report.md'}"
    )
    texts = {"report/intervals.csv": interval_table(report)} if report.intervals is not None else {}
    return StageResult(printed, {f"report/mean_r/{metric_key(m)}": v for m, v in means.items()}, artifacts, texts=texts)


def ensemble_note(chosen: Mapping[str, Any]) -> str:
    """What the ensemble's weights are and whether val said combining helps (results/ensemble/weights.json)."""
    val_r = chosen["val_mean_r"]
    members = chosen["members"]
    best = max(members, key=lambda name: val_r[name])
    weights = pd.DataFrame(chosen["weights"]).T[members]
    shown = "; ".join(f"{name} {weights[name].mean():.2f}" for name in members)
    how = "mean over attributes of each attribute's own weights" if chosen["per_attribute"] else "one set for all attributes"
    verdict = "combining helps on val" if chosen["helps_on_val"] else f"combining does not beat {best} alone on val"
    return (
        f"Ensemble: weights chosen on the val faces' out-of-sample predictions ({how}: {shown}); val mean r "
        f"{val_r['ensemble']:.3f} against {best}'s {val_r[best]:.3f} (its own choice: optimistic): {verdict}."
    )


def read_region_table(path: Path) -> pd.DataFrame | None:
    """The explain stage's region importances; None when it wrote none (explain.region_importance: false)."""
    if not path.is_file():
        return None
    return pd.read_csv(path, dtype={"model": str, "attribute": str, "region": str}, **NA_OPTIONS)


def mlflow_runs_note(tracking: TrackingParams, experiment: str) -> list[str]:
    """Where this study's runs are in MLflow. No run ids, study names or times: the report is a DVC output, and
    identical runs must write identical bytes (dvc.lock stays clean); the study run it is logged to names them."""
    if tracking.uri.startswith("http"):
        where = experiment_page(tracking.uri, experiment)
    else:
        local = experiment_page("http://127.0.0.1:5000", experiment)
        where = f"mlflow ui --backend-store-uri {tracking.uri}, then {local}"
    return [
        f"MLflow (experiment {tracking.experiment}, open with {where}): this report is an artifact of the study's "
        "run, which carries the headline, with a nested run per stage."
    ]
