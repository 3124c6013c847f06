"""The report stage's inputs and outputs: the stages' metrics files in, report.md / report.html / report.json out."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from facetraits.config import StudyParams, TrackingParams, variant_params
from facetraits.data.prepared import PreparedData
from facetraits.errors import DataError
from facetraits.figures import save_figure
from facetraits.files import atomic_directory, atomic_write_json, atomic_write_text
from facetraits.models.components.backbones import BACKBONE_LABELS
from facetraits.report.comparison import HUMAN_CEILING, MEAN_ROW, comparison_table
from facetraits.report.headline import HANDCRAFTED_KEY, MAIN, headline, read_metrics
from facetraits.report.render import bar_chart, render_html, render_markdown
from facetraits.report.statistics import MethodComparison, compare_methods
from facetraits.stage_result import StageResult
from facetraits.tracking import StageRun, experiment_page, flatten_params, metric_key, study_runs

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
    """Test r per attribute of each method (by report label), and the metrics file each came from for errors."""

    scores: dict[str, dict[str, float]]
    files: dict[str, Path]


@dataclass(frozen=True)
class Report:
    table: pd.DataFrame
    comparison: MethodComparison
    human: pd.DataFrame | None
    methods: dict[str, dict[str, float]]


def build_report(attributes: Sequence[str], human: pd.DataFrame | None, methods: MethodScores) -> Report:
    """The table and its tests; a score for an attribute the prepared data lacks is an error naming its file."""
    sources = {name: str(path) for name, path in methods.files.items()}
    table = comparison_table(human, methods.scores, attributes, sources)
    return Report(table, compare_methods(methods.scores, attributes), human, dict(methods.scores))


def report_metrics(
    report: Report, keys: Mapping[str, str], explain_scores: Mapping[str, Any], manifold: Mapping[str, Any]
) -> dict[str, Any]:
    """results/report.json, the headline `dvc metrics show` compares; `keys`: each method's label -> its key."""
    mean_row = report.table.loc[MEAN_ROW]
    return headline(
        {keys[method]: mean_row[method] for method in report.methods},
        mean_row[HUMAN_CEILING] if report.human is not None else None,
        {"anova": report.comparison.anova.p_value, "friedman": report.comparison.friedman.p_value},
        explain_scores,
        manifold,
    )


def write_report(
    report: Report,
    title: str,
    links: Sequence[tuple[str, str]],
    notes: Sequence[str],
    metrics: Mapping[str, Any],
    results_dir: Path,
) -> list[Path]:
    """report.md, report.html and report.json (`metrics`) in results_dir, the bar chart under report_figures."""
    results_dir = Path(results_dir)
    with atomic_directory(results_dir / "report_figures") as figures:  # a whole new folder: no stale figures
        save_figure(bar_chart(report.table, list(report.methods), report.human), figures / "bar_chart.png")
    chart = results_dir / "report_figures" / "bar_chart.png"
    links = [("Test Pearson r per attribute and method", str(chart.relative_to(results_dir))), *links]
    written = [chart]
    for name, text in (
        ("report.md", render_markdown(title, report.table, report.comparison, links, notes)),
        ("report.html", render_html(title, report.table, report.comparison, links, notes, images=results_dir)),
    ):
        atomic_write_text(results_dir / name, text)
        written.append(results_dir / name)
    atomic_write_json(results_dir / "report.json", metrics)
    return [*written, results_dir / "report.json"]


def collect_methods(results: Path, main_label: str, variant_labels: Mapping[str, str]) -> MethodScores:
    """Test r per attribute of the hand-crafted baseline, the main model and each variant, from their metrics files."""
    files = {
        HANDCRAFTED: (results / "baselines" / "metrics.json", ("handcrafted", "test")),
        main_label: (results / "train" / "metrics.json", ("test",)),
        **{label: (results / "variants" / name / "metrics.json", ("test",)) for name, label in variant_labels.items()},
    }
    scores = {label: pearson_scores(read_metrics(path), path, section) for label, (path, section) in files.items()}
    return MethodScores(scores, {label: path for label, (path, _) in files.items()})


def report_notes(
    data: PreparedData, baselines: Mapping[str, Any], explain_scores: Mapping[str, Any], refitted: Sequence[str] = ()
) -> list[str]:
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
    for method, scores in explain_scores["mean"].items():
        note = (
            f"Attribution {method.replace('_', ' ')} (mean over attributes): deletion AUC {scores['deletion_auc']}, "
            f"insertion AUC {scores['insertion_auc']}, randomization rank r {scores['randomization_rank_corr']}"
        )
        if "randomization_passed" in scores:
            note += f" (passed on a share {scores['randomization_passed']} of faces)"
        if "mass_accuracy" in scores:
            note += f", relevance mass accuracy {scores['mass_accuracy']}"
        notes.append(note)
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
    """report.json's mean test r of each method and the human ceiling, under its keys (`test_r_mean/main`)."""
    return {f"test_r_mean/{key}": value for key, value in metrics["test_r_mean"].items()}


def report_stage(data: PreparedData, params: StudyParams, results: Path, run: StageRun | None = None) -> StageResult:
    """The report stage: every method's test scores from the other stages' metrics files, compared and written;
    the report names the study's MLflow runs, and the study's parent run gets its headline."""
    runs = study_runs(run) if run is not None else []
    variant_labels = {
        name: f"{BACKBONE_LABELS[variant_params(params, name).model.backbone]}, {name}" for name in params.variants
    }
    methods = collect_methods(results, BACKBONE_LABELS[params.model.backbone], variant_labels)
    baselines = read_metrics(results / "baselines" / "metrics.json")
    explain_scores = read_metrics(results / "explain" / "scores.json")
    manifold = read_metrics(results / "manifold" / "metrics.json")
    report = build_report(data.attributes, human_reference(baselines), methods)
    refits = {label: params.train.refits_on_val for label in (BACKBONE_LABELS[params.model.backbone], HANDCRAFTED)}
    refits |= {label: variant_params(params, name).train.refits_on_val for name, label in variant_labels.items()}
    refitted = [label for label, refit in refits.items() if refit]
    where = mlflow_runs_note(params.tracking, run.experiment_id if run is not None else "", runs)
    notes = [*report_notes(data, baselines, explain_scores, refitted), *where]
    keys = {BACKBONE_LABELS[params.model.backbone]: MAIN, HANDCRAFTED: HANDCRAFTED_KEY}
    keys |= {label: name for name, label in variant_labels.items()}
    metrics = report_metrics(report, keys, explain_scores, manifold)
    links = report_links(results, explain_scores)
    written = write_report(report, params.report.title, links, notes, metrics, results)
    if run is not None:
        run.log_to_study(study_headline_metrics(metrics), study_headline_params(params, data))
    means = report.table.loc[MEAN_ROW, list(report.methods)]
    artifacts = [(path, "report" if path.parent == results else "report/figures") for path in written]
    anova = report.comparison.anova
    summary = (
        f"mean test r: {', '.join(f'{m} {means[m]:.3f}' for m in report.methods)}; "
        f"{anova.test} p = {anova.p_value:.3g} -> {results / 'report.md'}"
    )
    return StageResult(summary, {f"report/mean_r/{metric_key(m)}": v for m, v in means.items()}, artifacts)


def mlflow_runs_note(tracking: TrackingParams, experiment: str, runs: Sequence[tuple[str, str]]) -> list[str]:
    """Where this study's runs are in MLflow: the report names them, so a reader can open each one."""
    if not runs:
        return []
    if tracking.uri.startswith("http"):
        where = experiment_page(tracking.uri, experiment)
    else:
        local = experiment_page("http://127.0.0.1:5000", experiment)
        where = f"`mlflow ui --backend-store-uri {tracking.uri}`, then {local}"
    listed = "; ".join(f"{name}: {run_id}" for name, run_id in runs)
    return [f"MLflow runs of this study (experiment {tracking.experiment}, open with {where}): {listed}."]
