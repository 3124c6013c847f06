"""DVC stage `report`: the paper's comparison table (human ceiling, hand-crafted, every trained variant), its
statistics and figures, as results/report.md and results/report.html."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from facetraits.config import load_params, variant_params
from facetraits.data.prepared import load_prepared
from facetraits.errors import FaceTraitsError
from facetraits.files import ready_outputs
from facetraits.report.comparison import MEAN_ROW
from facetraits.report.study import (
    BACKBONE_LABELS,
    REPORT_OUTPUTS,
    build_report,
    collect_methods,
    human_reference,
    read_metrics,
    report_links,
    report_notes,
    write_report,
)
from facetraits.tracking import TAG_FINGERPRINT, flatten_params, metric_name, stage_run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--prepared", type=Path, default=Path("data/prepared"))
    parser.add_argument("--results", type=Path, default=Path("results"), help="the stages' results folder")
    args = parser.parse_args(argv)
    results = args.results
    try:
        params = load_params(args.params)
        ready_outputs(*(results / name for name in REPORT_OUTPUTS))
        data = load_prepared(args.prepared)
        variant_labels = {
            name: f"{BACKBONE_LABELS[variant_params(params, name).model.backbone]}, {name}" for name in params.variants
        }
        methods = collect_methods(results, BACKBONE_LABELS[params.model.backbone], variant_labels)
        baselines = read_metrics(results / "baselines" / "metrics.json")
        explain_scores = read_metrics(results / "explain" / "scores.json")
        report = build_report(data.attributes, human_reference(baselines), methods)
        with stage_run(params.tracking, "report", flatten_params(params.report, prefix="report.")) as run:
            run.set_tags({TAG_FINGERPRINT: data.meta["fingerprint"]})
            notes = report_notes(data, baselines, explain_scores)
            written = write_report(report, params.report.title, report_links(results, explain_scores), notes, results)
            means = report.table.loc[MEAN_ROW, list(report.methods)]
            run.log_metrics({f"report/mean_r/{metric_name(m)}": v for m, v in means.items()})
            for path in written:
                run.log_artifact(path, "report" if path.parent == results else "report/figures")
    except FaceTraitsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    means = ", ".join(f"{m} {report.table.loc[MEAN_ROW, m]:.3f}" for m in report.methods)
    anova = report.comparison.anova
    print(f"mean test r: {means}; {anova.test} p = {anova.p_value:.3g} -> {results / 'report.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
