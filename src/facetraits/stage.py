"""The stage contract: what every DVC stage script shares, written once.

A script in pipelines/ declares its Stage (paths, outputs, logged params sections) and the library call; this
module parses the flags, loads and merges the params, checks the outputs are writable before any work, opens
the MLflow run tagged with the data fingerprint, logs the StageResult and prints its summary, and turns a
FaceTraitsError into one `error:` line and exit code 1 (under `dvc repro` as when a script is run directly).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Iterable, Mapping
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from facetraits.config import StudyParams, load_params, merge_overrides, variant_params
from facetraits.data.prepared import PreparedData, load_prepared
from facetraits.errors import FaceTraitsError
from facetraits.files import ready_outputs
from facetraits.stage_result import StageResult
from facetraits.tracking import TAG_FINGERPRINT, TAG_VARIANT, StageRun, current_study, flatten_params, stage_run


@dataclass(frozen=True)
class StageInputs:
    """What the library call of a stage gets: validated params, the paths from the command line, the prepared
    data (when the stage reads it) and the MLflow run (None on the extra processes of a multi-GPU run)."""

    params: StudyParams
    paths: argparse.Namespace
    data: PreparedData | None
    run: StageRun | None
    variant: str | None = None


@dataclass(frozen=True)
class Stage:
    """A DVC stage's declaration. `paths`: flag -> default (each becomes `--flag PATH`); `outputs`: what the
    stage writes, from its paths; `logged`: params.yaml sections logged as run params (None: all of them);
    `prepared`: the path flag of the prepared data it reads (None: it reads none); `best_params`: how to read a
    sweep's best_params.yaml, for a stage that takes --best-params and --variant (training); `every_rank`: runs
    on every process of a distributed run, writing and logging on rank 0 only; `tracked`: whether these params
    give the stage anything to log (no run otherwise, rather than an empty one)."""

    name: str
    description: str
    paths: Mapping[str, str]
    outputs: Callable[[argparse.Namespace], Iterable[Path]]
    logged: tuple[str, ...] | None
    prepared: str | None = "prepared"
    best_params: Callable[[Path], dict[str, Any]] | None = None
    every_rank: bool = False
    help: Mapping[str, str] = field(default_factory=dict)
    tracked: Callable[[StudyParams], bool] = lambda params: True


def parse_args(stage: Stage, argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=stage.description)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    for flag, default in stage.paths.items():
        parser.add_argument(f"--{flag.replace('_', '-')}", type=Path, default=Path(default), help=stage.help.get(flag))
    if stage.best_params is not None:
        parser.add_argument("--best-params", type=Path, help="a sweep's best_params.yaml, applied over params.yaml")
        parser.add_argument("--variant", help="train one of params.yaml's variants (its changes applied last)")
    return parser.parse_args(argv)


def stage_params(stage: Stage, args: argparse.Namespace) -> StudyParams:
    """params.yaml, then a sweep's best params, then a variant's changes: each validated as params.yaml is."""
    params = load_params(args.params)
    if stage.best_params is not None and args.best_params is not None:
        params = merge_overrides(params, stage.best_params(args.best_params), source=str(args.best_params))
    if stage.best_params is not None and args.variant is not None:
        params = variant_params(params, args.variant, str(args.params))
    return params


def _rank_zero() -> bool:
    """Process 0 of a distributed (torchrun / SLURM) run, read from its environment as Lightning reads it."""
    from lightning.pytorch.utilities import rank_zero_only

    return rank_zero_only.rank == 0


def _stage_run(
    stage: Stage, args: argparse.Namespace, params: StudyParams, logged: Mapping[str, str], call: Callable[..., Any]
):
    """The stage's MLflow run, named as its DVC stage (`variant@<name>` for a variant), in its study."""
    variant = getattr(args, "variant", None)
    name, description = stage.name, " ".join(stage.description.split())
    if variant is not None:
        name = f"variant@{variant}"
        description += f" Variant `{variant}`: the main model's settings with params.yaml's variants.{variant} applied."
    source = os.path.relpath(call.__code__.co_filename)
    return stage_run(params.tracking, name, logged, current_study(args.params), description, source)


def run_stage(stage: Stage, argv: list[str] | None, call: Callable[[StageInputs], StageResult | None]) -> int:
    """Run one stage as DVC does; the exit status: 0, or 1 after an `error:` line naming what is wrong."""
    args = parse_args(stage, argv)
    variant = getattr(args, "variant", None)
    logging = not stage.every_rank or _rank_zero()
    try:
        params = stage_params(stage, args)
        if logging:
            ready_outputs(*stage.outputs(args))
        data = load_prepared(getattr(args, stage.prepared)) if stage.prepared else None
        logged = params if stage.logged is None else {name: getattr(params, name) for name in stage.logged}
        tracked = logging and stage.tracked(params)
        with _stage_run(stage, args, params, flatten_params(logged), call) if tracked else nullcontext() as run:
            if run is not None:
                tags = {} if data is None else {TAG_FINGERPRINT: data.meta["fingerprint"]}
                run.set_tags({**tags, **({TAG_VARIANT: variant or "main"} if stage.best_params else {})})
                if data is not None:
                    run.log_dataset(
                        "prepared", data.meta["fingerprint"][:16], str(Path(data.root).resolve()),
                        {"faces": len(data.faces), "attributes": len(data.attributes),
                         "image_size": int(data.images.shape[1])},
                        context=stage.name,
                    )  # fmt: skip
            result = call(StageInputs(params, args, data, run, variant))
            if run is not None and result is not None:
                if result.fingerprint is not None:
                    run.set_tags({TAG_FINGERPRINT: result.fingerprint})
                result.log_to(run)
    except FaceTraitsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if result is not None:
        print(result.summary)
    return 0
