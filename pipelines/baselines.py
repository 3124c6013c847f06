"""DVC stage `baselines`: human split-half reliability (the noise ceiling) and the hand-crafted-feature SVR."""

from __future__ import annotations

import sys

from facetraits.baselines.study import baselines_stage
from facetraits.stage import Stage, StageInputs, run_stage

STAGE = Stage(
    name="baselines",
    description=__doc__,
    paths={"prepared": "data/prepared", "out": "results/baselines"},
    outputs=lambda paths: (paths.out,),
    logged=("baselines",),
)


def call(stage: StageInputs):
    params = stage.params
    return baselines_stage(stage.data, params.baselines, stage.paths.out, params.train.refits_on_val)


def main(argv: list[str] | None = None) -> int:
    return run_stage(STAGE, argv, call)


if __name__ == "__main__":
    sys.exit(main())
