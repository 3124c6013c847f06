"""DVC stage `face_features`: dlib's face blocks of every prepared face, computed once into data/face_features."""

from __future__ import annotations

import sys

from facetraits.data.face_features import face_features_stage
from facetraits.stage import Stage, StageInputs, run_stage

STAGE = Stage(
    name="face_features",
    description=__doc__,
    paths={"prepared": "data/prepared", "out": "data/face_features"},
    outputs=lambda paths: (paths.out,),
    logged=("face_features",),
    tracked=lambda params: bool(params.face_features.blocks),  # no blocks: nothing computed, no run to log
)


def call(stage: StageInputs):
    return face_features_stage(stage.params.face_features, stage.data, stage.paths.out)


def main(argv: list[str] | None = None) -> int:
    return run_stage(STAGE, argv, call)


if __name__ == "__main__":
    sys.exit(main())
