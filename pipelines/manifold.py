"""DVC stage `manifold`: maps of all faces from backbone features, predicted and human ratings, scored and drawn."""

from __future__ import annotations

import sys

from facetraits.manifold.study import manifold_stage
from facetraits.models.inference import resolve_precision
from facetraits.stage import Stage, StageInputs, run_stage

STAGE = Stage(
    name="manifold",
    description=__doc__,
    paths={"prepared": "data/prepared", "models": "models", "out": "results/manifold"},
    outputs=lambda paths: (paths.out,),
    logged=("manifold",),
)


def call(stage: StageInputs):
    params, paths = stage.params, stage.paths
    train = params.train
    precision = resolve_precision(train)
    return manifold_stage(stage.data, params.manifold, train.accelerator, precision, paths.models, paths.out)


def main(argv: list[str] | None = None) -> int:
    return run_stage(STAGE, argv, call)


if __name__ == "__main__":
    sys.exit(main())
