"""One error contract for every stage and the `facetraits` command: an expected failure of an input (an
unreadable or truncated file, a store that cannot be opened, memory exhausted, a stop signal) is one `error:`
line naming the file or key and a non-zero exit; a bug keeps its traceback, as does anything under --debug."""

from __future__ import annotations

import errno
import os
import pickle
import signal
import time
from pathlib import Path

import pytest
import yaml
from mlflow.exceptions import MlflowException

from facetraits.cli import main as cli
from facetraits.errors import ConfigError
from facetraits.stage import Stage, dvc_variant, parse_args, run_stage

FAILURES = {
    "OSError": (
        lambda: OSError(errno.EACCES, "Permission denied", "data/raw/faces.csv"),
        "error: data/raw/faces.csv: Permission denied",
    ),
    "MemoryError": (lambda: MemoryError(), "error: out of memory; a smaller input or batch size needs less"),
    "EOFError": (
        lambda: EOFError("Ran out of input"),
        "error: a file is truncated or not in the expected format (EOFError: Ran out of input)",
    ),
    "UnpicklingError": (
        lambda: pickle.UnpicklingError("invalid load key, 'x'."),
        "error: a file is truncated or not in the expected format (UnpicklingError: invalid load key, 'x'.)",
    ),
    "MlflowException": (
        lambda: MlflowException("cannot open sqlite:///x.db"), "error: MLflow: cannot open sqlite:///x.db"
    ),
}  # fmt: skip


@pytest.fixture
def params(tmp_path: Path) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump({"variants": {"fast": {"train": {"lr": 0.01}}}}))
    return path


def _stage(**changes) -> Stage:
    fields = {"name": "demo", "description": "a demo stage", "paths": {"out": "out"}, "outputs": lambda paths: (),
              "logged": (), "prepared": None, "tracked": lambda params: False}  # fmt: skip
    return Stage(**{**fields, **changes})


def _raise(exc: BaseException):
    def call(stage):
        raise exc

    return call


@pytest.mark.parametrize("kind", sorted(FAILURES))
def test_a_stage_turns_an_expected_failure_into_one_error_line(kind: str, params: Path, tmp_path: Path, capsys) -> None:
    exception, line = FAILURES[kind]
    argv = ["--params", str(params), "--out", str(tmp_path / "out")]
    assert run_stage(_stage(), argv, _raise(exception())) == 1
    assert capsys.readouterr().err.splitlines() == [line]
    with pytest.raises(type(exception())):  # --debug: the traceback
        run_stage(_stage(), [*argv, "--debug"], _raise(exception()))


def test_a_bug_keeps_its_traceback(params: Path, tmp_path: Path) -> None:
    with pytest.raises(ZeroDivisionError):
        run_stage(_stage(), ["--params", str(params), "--out", str(tmp_path / "out")], lambda stage: 1 / 0)


def test_a_stop_signal_unwinds_the_stage_and_names_itself(params: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    """SIGTERM raises inside the call (so atomic writes in progress are discarded) and exits 128 + 15; the deadline
    that would kill a stage whose unwinding hangs ends once it has unwound."""
    monkeypatch.setattr("facetraits.stage.GRACE_S", 0.2)
    unwound = []

    def call(stage):
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            signal.pause()  # not reached: the handler raises first
        finally:
            unwound.append(True)

    assert run_stage(_stage(), ["--params", str(params), "--out", str(tmp_path / "out")], call) == 128 + signal.SIGTERM
    assert unwound == [True]
    assert capsys.readouterr().err.splitlines() == ["error: demo stopped by SIGTERM; its previous outputs are kept"]
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL, "the handlers are restored"
    time.sleep(0.5)  # past the deadline: this process is still here


def test_the_command_turns_an_expected_failure_into_one_error_line(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setattr("facetraits.cli.load_params", lambda path: (_ for _ in ()).throw(MemoryError()))
    assert cli(["check-params", str(tmp_path / "params.yaml")]) == 1
    assert capsys.readouterr().err.splitlines() == ["error: out of memory; a smaller input or batch size needs less"]
    with pytest.raises(MemoryError):
        cli(["--debug", "check-params", str(tmp_path / "params.yaml")])


# --- the variant a stage trains: from --variant, or from DVC's $DVC_STAGE; never from the shell ---------------------

TRAINING = {"paths": {"models": "models", "out": "results/train"}, "best_params": lambda path: {},
            "variant_paths": lambda name: {"models": f"variants/{name}/models",
                                           "out": f"results/variants/{name}"}}  # fmt: skip


@pytest.mark.parametrize(
    ("addressing", "variant"),
    [("train", None), ("variant@fast", "fast"), ("studies/omi/dvc.yaml:variant@probe", "probe"), ("report", None)],
)
def test_dvc_names_the_variant(addressing: str, variant: str | None) -> None:
    assert dvc_variant(addressing) == variant


@pytest.mark.parametrize(
    "addressing",
    ["variant@x;touch /tmp/INJECTED;#", "variant@$(id)", "variant@a b", "variant@", "variant@x/dvc.yaml:variant@fast",
     "variant@a:b", "variant@x:variant@fast"],
)  # fmt: skip
def test_a_hostile_variant_name_from_dvc_is_refused(addressing: str) -> None:
    """A name that is not letters, digits, _ and -, or that could pass for another variant's address."""
    with pytest.raises(ConfigError, match=r"variants: DVC stage .* is not variant@<name> with a name of letters"):
        dvc_variant(addressing)


def test_a_variant_stage_derives_its_paths_from_its_name() -> None:
    args = parse_args(_stage(**TRAINING), [], {"DVC_STAGE": "variant@fast"})
    assert (args.variant, args.models, args.out) == ("fast", Path("variants/fast/models"),
                                                     Path("results/variants/fast"))  # fmt: skip
    by_hand = parse_args(_stage(**TRAINING), ["--variant", "fast", "--out", "elsewhere"], {})
    assert (by_hand.variant, by_hand.models, by_hand.out) == ("fast", Path("variants/fast/models"), Path("elsewhere"))
    main = parse_args(_stage(**TRAINING), [], {"DVC_STAGE": "train"})
    assert (main.variant, main.models, main.out) == (None, Path("models"), Path("results/train"))


def test_a_variant_flag_that_contradicts_dvc_or_is_hostile_is_refused(params: Path, capsys) -> None:
    with pytest.raises(ConfigError, match="--variant 'slow', but DVC runs stage variant@fast"):
        parse_args(_stage(**TRAINING), ["--variant", "slow"], {"DVC_STAGE": "variant@fast"})
    assert run_stage(_stage(**TRAINING), ["--params", str(params), "--variant", "x;id"], lambda stage: None) == 1
    refused = "error: --variant 'x;id': a variant name is letters, digits, _ and -"
    assert capsys.readouterr().err.splitlines() == [refused]
