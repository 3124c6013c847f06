"""DVC stage `prepare`: decode the configured source into data/prepared and log it to MLflow."""

from __future__ import annotations

import sys

from facetraits.data.prepare import prepare_stage
from facetraits.stage import Stage, StageInputs, run_stage

STAGE = Stage(
    name="prepare",
    description=__doc__,
    paths={"out": "data/prepared", "summary": "results/prepare.json"},
    outputs=lambda paths: (paths.out, paths.summary),
    logged=("data",),
    prepared=None,
)


def call(stage: StageInputs):
    return prepare_stage(stage.params.data, stage.paths.out, stage.paths.summary)


def main(argv: list[str] | None = None) -> int:
    return run_stage(STAGE, argv, call)


if __name__ == "__main__":
    sys.exit(main())
