"""The stage contract: what every DVC stage script shares, written once.

A script in pipelines/ declares its Stage (paths, outputs, logged params sections) and the library call; this
module parses the flags, loads and merges the params, checks the outputs are writable before any work, opens
the MLflow run tagged with the data fingerprint, logs the StageResult and prints its summary, and turns a
FaceTraitsError (or an expected failure of an input: errors.expected_failure) into one `error:` line and exit
code 1 (under `dvc repro` as when a script is run directly). SIGTERM, SIGINT, SIGHUP, or the `dvc` that ran the
stage dying, stop it like Ctrl-C: atomic writes in progress are discarded, the previous outputs stay.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterable, Mapping
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from facetraits.config import VARIANT_NAME, StudyParams, load_params, merge_overrides, variant_params
from facetraits.data.prepared import PreparedData, load_prepared
from facetraits.errors import ConfigError, expected_failure
from facetraits.files import ready_outputs
from facetraits.stage_result import StageResult
from facetraits.tracking import (
    TAG_FINGERPRINT,
    TAG_VARIANT,
    StageRun,
    current_study,
    dvc_launcher,
    flatten_params,
    stage_run,
)

VARIANT_STAGE = "variant"  # dvc.yaml's foreach stage: DVC runs `variant@<name>` for each params.yaml variant
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
GRACE_S = 10.0  # after a stop signal, how long unwinding may take before the process tree is killed
PARENT_POLL_S = 0.5


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
    sweep's best_params.yaml, for a stage that takes --best-params and --variant (training); `variant_paths`: a
    variant's own paths (flag -> path) by its name, for path flags not given; `every_rank`: runs on every process
    of a distributed run, writing and logging on rank 0 only; `tracked`: whether these params give the stage
    anything to log (no run otherwise, rather than an empty one)."""

    name: str
    description: str
    paths: Mapping[str, str]
    outputs: Callable[[argparse.Namespace], Iterable[Path]]
    logged: tuple[str, ...] | None
    prepared: str | None = "prepared"
    best_params: Callable[[Path], dict[str, Any]] | None = None
    variant_paths: Callable[[str], Mapping[str, str]] | None = None
    every_rank: bool = False
    help: Mapping[str, str] = field(default_factory=dict)
    tracked: Callable[[StudyParams], bool] = lambda params: True


def dvc_variant(addressing: str | None) -> str | None:
    """The variant name in DVC's address of the running stage ($DVC_STAGE: `variant@<name>`, or
    `<path>/dvc.yaml:variant@<name>` for a study's dvc.yaml); None for any other stage.

    This is how a variant stage learns its name: dvc.yaml's command holds no params-derived text, so nothing a
    user writes in params.yaml reaches the shell. A name is letters, digits, `_` and `-`; any other is refused
    here, before its paths are derived.
    """
    marker = f"{VARIANT_STAGE}@"
    if not addressing or marker not in addressing:
        return None
    file, _, name = addressing.rpartition(":")
    name = name.removeprefix(marker) if name.startswith(marker) else None
    if name is None or not VARIANT_NAME.fullmatch(name) or (file and (marker in file or Path(file).name != "dvc.yaml")):
        raise ConfigError(
            f"variants: DVC stage {addressing!r} is not variant@<name> with a name of letters, digits, _ and - "
            "(rename the variant in params.yaml)"
        )
    return name


def parse_args(stage: Stage, argv: list[str] | None, environ: Mapping[str, str] = os.environ) -> argparse.Namespace:
    """The flags; a training stage's variant comes from --variant, else from DVC ($DVC_STAGE), and its path
    flags not given default to the variant's own paths."""
    parser = argparse.ArgumentParser(description=stage.description)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--debug", action="store_true", help="show the traceback of an expected failure")
    for flag in stage.paths:
        parser.add_argument(f"--{flag.replace('_', '-')}", type=Path, help=stage.help.get(flag))
    if stage.best_params is not None:
        parser.add_argument("--best-params", type=Path, help="a sweep's best_params.yaml, applied over params.yaml")
        parser.add_argument("--variant", help="train one of params.yaml's variants (its changes applied last)")
    args = parser.parse_args(argv)
    if stage.best_params is not None:
        from_dvc = dvc_variant(environ.get("DVC_STAGE"))
        if args.variant is not None and from_dvc is not None and args.variant != from_dvc:
            raise ConfigError(f"--variant {args.variant!r}, but DVC runs stage variant@{from_dvc}")
        args.variant = args.variant if args.variant is not None else from_dvc
        if args.variant is not None and not VARIANT_NAME.fullmatch(args.variant):
            raise ConfigError(f"--variant {args.variant!r}: a variant name is letters, digits, _ and -")
    own = stage.variant_paths(args.variant) if stage.variant_paths and getattr(args, "variant", None) else {}
    for flag, default in stage.paths.items():
        if getattr(args, flag) is None:
            setattr(args, flag, Path(own.get(flag, default)))
    return args


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


class StageInterrupted(KeyboardInterrupt):
    """A stop signal, or the `dvc` that ran the stage gone. A KeyboardInterrupt, so that it unwinds like Ctrl-C
    through code that handles exceptions (Optuna's failed trials, Lightning's fit), discarding every atomic write
    in progress."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _kill_tree_after(grace_s: float, signum: int) -> threading.Timer:
    """The last resort when stopping hangs (a C call, a stuck worker): kill this process's children, then it."""
    import psutil

    def kill() -> None:
        for child in psutil.Process().children(recursive=True):
            try:
                child.kill()
            except psutil.Error:
                pass
        os._exit(128 + signum)

    timer = threading.Timer(grace_s, kill)
    timer.daemon = True
    timer.start()
    return timer


def _watch_launcher(launcher: tuple[int, float], stop: threading.Event) -> None:
    """SIGTERM to `dvc repro` kills dvc but not its stage (DVC forwards no signal): when the `dvc` process that
    ran this stage is gone, stop as if signalled."""
    import psutil

    pid, started = launcher
    while not stop.wait(PARENT_POLL_S):
        try:
            process = psutil.Process(pid)
            alive = process.create_time() == started and process.status() != psutil.STATUS_ZOMBIE
        except psutil.Error:
            alive = False
        if not alive:  # nothing may keep an orphan alive: the deadline holds until the process exits
            _kill_tree_after(GRACE_S, signal.SIGTERM)
            os.kill(os.getpid(), signal.SIGTERM)
            return


@contextmanager
def stopped_by_signals():
    """Inside: SIGTERM / SIGINT / SIGHUP (and the death of the launching `dvc`) raise StageInterrupted once; a
    second signal is ignored while unwinding, which may take GRACE_S before the process tree is killed (the
    deadline ends with the block; when `dvc` is gone, with the process)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    deadlines: list[threading.Timer] = []
    owner = os.getpid()

    def stop(signum: int, frame: object) -> None:
        if os.getpid() != owner:  # a forked worker (a Pool's, terminated when its work is done): die as by default
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        for name in STOP_SIGNALS:
            signal.signal(name, signal.SIG_IGN)
        deadlines.append(_kill_tree_after(GRACE_S, signum))
        raise StageInterrupted(signum)

    previous = {name: signal.signal(name, stop) for name in STOP_SIGNALS}
    watching = threading.Event()
    launcher = dvc_launcher()
    if launcher is not None:
        threading.Thread(target=_watch_launcher, args=(launcher, watching), daemon=True).start()
    try:
        yield
    finally:
        watching.set()
        for deadline in deadlines:
            deadline.cancel()
        for name, handler in previous.items():
            signal.signal(name, handler)


def run_stage(stage: Stage, argv: list[str] | None, call: Callable[[StageInputs], StageResult | None]) -> int:
    """Run one stage as DVC does; the exit status: 0, 1 after an `error:` line naming what is wrong, or 128 + the
    signal that stopped it."""
    args = None
    try:
        args = parse_args(stage, argv)
        with stopped_by_signals():
            result = _run(stage, args, call)
    except StageInterrupted as exc:
        print(f"error: {stage.name} stopped by {exc}; its previous outputs are kept", file=sys.stderr)
        return 128 + exc.signum
    except Exception as exc:  # noqa: BLE001 - only the expected failures of inputs; a bug is re-raised
        message = None if args is not None and args.debug else expected_failure(exc)
        if message is None:
            raise
        print(f"error: {message}", file=sys.stderr)
        return 1
    if result is not None:
        print(result.summary)
    return 0


def _run(
    stage: Stage, args: argparse.Namespace, call: Callable[[StageInputs], StageResult | None]
) -> StageResult | None:
    """The stage's work, in order: params, outputs writable, prepared data, its MLflow run around the call."""
    variant = getattr(args, "variant", None)
    logging = not stage.every_rank or _rank_zero()
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
    return result
