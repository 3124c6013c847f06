"""DVC stage `manifold`: maps of all faces from backbone features, predicted and human ratings, scored and drawn."""

from __future__ import annotations

import sys

from facetraits.manifold.study import manifold_stage
from facetraits.stage import Stage, StageInputs, run_stage

STAGE = Stage(
    name="manifold",
    description=__doc__,
    paths={"prepared": "data/prepared", "train": "results/train", "out": "results/manifold"},
    outputs=lambda paths: (paths.out,),
    logged=("manifold",),
    help={"train": "the train stage's results (features.npy, predictions.csv)"},
)


def call(stage: StageInputs):
    return manifold_stage(stage.data, stage.params.manifold, stage.paths.train, stage.paths.out)


def main(argv: list[str] | None = None) -> int:
    return run_stage(STAGE, argv, call)


if __name__ == "__main__":
    sys.exit(main())
