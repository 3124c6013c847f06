"""DVC stage `sweep`: an Optuna study over sweep.space; its best trial becomes results/sweep/best_params.yaml."""

from __future__ import annotations

import sys

from facetraits.stage import Stage, StageInputs, run_stage
from facetraits.sweep.outputs import SWEEP_OUTPUTS, sweep_stage

STAGE = Stage(
    name="sweep",
    description=__doc__,
    paths={"prepared": "data/prepared", "out": "results/sweep"},
    outputs=lambda paths: [paths.out / name for name in SWEEP_OUTPUTS],
    logged=None,
    tracked=lambda params: params.sweep.n_trials > 0,
)


def call(stage: StageInputs):
    paths = stage.paths
    return sweep_stage(stage.params, paths.prepared, stage.data.meta["fingerprint"], paths.out, stage.run)


def main(argv: list[str] | None = None) -> int:
    return run_stage(STAGE, argv, call)


if __name__ == "__main__":
    sys.exit(main())
