"""DVC stage `train`: fit the attribute model(s) on the prepared faces, score them, log everything to MLflow."""

from __future__ import annotations

import sys

from facetraits.models.evaluation import train_stage
from facetraits.stage import Stage, StageInputs, run_stage
from facetraits.sweep.outputs import read_best_params

STAGE = Stage(
    name="train",
    description=__doc__,
    paths={"prepared": "data/prepared", "face_features": "data/face_features", "models": "models", "out": "results/train"},
    outputs=lambda paths: (paths.out, paths.models),
    logged=("data", "model", "train"),
    best_params=read_best_params,
    variant_paths=lambda name: {"models": f"variants/{name}/models", "out": f"results/variants/{name}"},
    every_rank=True,
)


def call(stage: StageInputs):
    params, paths = stage.params, stage.paths
    return train_stage(
        stage.data, params.model, params.train, params.tracking, paths.models, paths.out, stage.run, paths.face_features
    )


def main(argv: list[str] | None = None) -> int:
    return run_stage(STAGE, argv, call)


if __name__ == "__main__":
    sys.exit(main())
