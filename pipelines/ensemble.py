"""DVC stage `ensemble`: the models named in ensemble.members combined, with weights chosen on val, as one model."""

from __future__ import annotations

import sys

from facetraits.models.ensemble import ensemble_stage
from facetraits.stage import Stage, StageInputs, run_stage

STAGE = Stage(
    name="ensemble",
    description=__doc__,
    paths={"prepared": "data/prepared", "results": "results", "models": "models", "variants": "variants",
           "out": "results/ensemble"},  # fmt: skip
    outputs=lambda paths: (paths.out,),
    logged=("ensemble",),
    help={"results": "the train and variant stages' results folder"},
    tracked=lambda params: bool(params.ensemble.members),  # no members: nothing combined, no run to log
)


def call(stage: StageInputs):
    params, paths = stage.params, stage.paths
    return ensemble_stage(
        params.ensemble, params.tracking, stage.data, paths.results, paths.models, paths.variants, paths.out, stage.run
    )


def main(argv: list[str] | None = None) -> int:
    return run_stage(STAGE, argv, call)


if __name__ == "__main__":
    sys.exit(main())
