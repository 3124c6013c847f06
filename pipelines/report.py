"""DVC stage `report`: the paper's comparison table (human ceiling, hand-crafted, every trained variant), its
statistics and figures, as results/report.md and results/report.html."""

from __future__ import annotations

import sys

from facetraits.report.study import REPORT_OUTPUTS, report_stage
from facetraits.stage import Stage, StageInputs, run_stage

STAGE = Stage(
    name="report",
    description=__doc__,
    paths={"prepared": "data/prepared", "results": "results"},
    outputs=lambda paths: [paths.results / name for name in REPORT_OUTPUTS],
    logged=("report",),
    help={"results": "the stages' results folder"},
)


def call(stage: StageInputs):
    return report_stage(stage.data, stage.params, stage.paths.results, stage.run)


def main(argv: list[str] | None = None) -> int:
    return run_stage(STAGE, argv, call)


if __name__ == "__main__":
    sys.exit(main())
