"""DVC stage `explain`: attribution maps of the trained model for every attribute and method, scored."""

from __future__ import annotations

import sys

from facetraits.explain.outputs import explain_stage
from facetraits.models.inference import resolve_precision
from facetraits.stage import Stage, StageInputs, run_stage

STAGE = Stage(
    name="explain",
    description=__doc__,
    paths={"prepared": "data/prepared", "models": "models", "variants": "variants", "out": "results/explain"},
    outputs=lambda paths: (paths.out,),
    logged=("explain",),
)


def call(stage: StageInputs):
    params, paths = stage.params, stage.paths
    train = params.train
    precision = resolve_precision(train)
    return explain_stage(
        stage.data, params.explain, train.accelerator, precision, paths.models, paths.out, paths.params, paths.variants,
        tuple(params.variants),
    )


def main(argv: list[str] | None = None) -> int:
    return run_stage(STAGE, argv, call)


if __name__ == "__main__":
    sys.exit(main())
