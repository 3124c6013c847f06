"""The stage contract: flags, params (with best params and variants), the MLflow run, the error exit."""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from lightning.pytorch.utilities import rank_zero_only
from mlflow.tracking import MlflowClient

from facetraits.errors import DataError
from facetraits.stage import Stage, StageInputs, run_stage, stopped_by_signals
from facetraits.stage_result import StageResult
from facetraits.sweep.outputs import read_best_params
from facetraits.tracking import (
    STUDY_ENV,
    TAG_DESCRIPTION,
    TAG_FINGERPRINT,
    TAG_PARENT,
    TAG_ROLE,
    TAG_STAGE,
    TAG_STUDY,
    TAG_VARIANT,
)


@pytest.fixture()
def project(tmp_path: Path) -> Path:
    """params.yaml (MLflow in tmp_path, one variant) and a four-face prepared folder."""
    params = {
        "tracking": {"uri": f"sqlite:///{tmp_path / 'mlflow.db'}", "experiment": "contract", "artifacts": str(tmp_path / "a")},
        "train": {"lr": 0.001},
        "variants": {"slow": {"train": {"lr": 0.0001}}},
    }
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    prepared = tmp_path / "prepared"
    prepared.mkdir()
    np.save(prepared / "images.npy", np.zeros((4, 8, 8, 3), dtype=np.uint8))
    pd.DataFrame({"id": list("abcd"), "split": ["train", "train", "val", "test"], "happy": [1.0, 2, 3, 4]}).to_csv(
        prepared / "faces.csv", index=False
    )
    (prepared / "meta.json").write_text(json.dumps({"attributes": ["happy"], "fingerprint": "f00d"}))
    return tmp_path


def _stage(**changes) -> Stage:
    fields = {
        "name": "demo",
        "description": "a demo stage",
        "paths": {"prepared": "data/prepared", "out": "results/demo"},
        "outputs": lambda paths: (paths.out,),
        "logged": ("train",),
    }
    return Stage(**{**fields, **changes})


def _runs(project: Path) -> list:
    client = MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("contract")
    return [] if experiment is None else client.search_runs([experiment.experiment_id])


def _args(project: Path, *extra: str) -> list[str]:
    paths = ["--prepared", str(project / "prepared"), "--out", str(project / "out" / "demo.txt")]
    return ["--params", str(project / "params.yaml"), *paths, *extra]


def test_a_stage_gets_its_inputs_and_its_result_is_logged_and_printed(project: Path, capsys) -> None:
    seen: list[StageInputs] = []

    def call(stage: StageInputs) -> StageResult:
        seen.append(stage)
        stage.paths.out.write_text("written")
        return StageResult(
            "demo done", {"demo/score": 0.5, "demo/undefined": None}, [(stage.paths.out, "demo")],
            tags={"demo.tag": "x"}, texts={"demo/note.txt": "hello"},
        )  # fmt: skip

    assert run_stage(_stage(), _args(project), call) == 0
    assert capsys.readouterr().out == "demo done\n"
    (stage,) = seen
    assert stage.params.train.lr == 0.001 and stage.data.attributes == ("happy",) and stage.variant is None
    (run,) = _runs(project)
    assert run.info.status == "FINISHED" and run.info.run_name == "demo"
    assert run.data.tags[TAG_STAGE] == "demo" and run.data.tags[TAG_FINGERPRINT] == "f00d"
    assert run.data.tags["demo.tag"] == "x" and TAG_VARIANT not in run.data.tags
    assert run.data.metrics == {"demo/score": 0.5}
    assert set(run.data.params) == {p for p in run.data.params if p.startswith("train.")} and "train.lr" in run.data.params
    artifacts = MlflowClient(f"sqlite:///{project / 'mlflow.db'}").list_artifacts(run.info.run_id, "demo")
    assert {a.path for a in artifacts} == {"demo/demo.txt", "demo/note.txt"}


def test_a_library_error_is_one_line_exit_1_and_a_failed_run(project: Path, capsys) -> None:
    def call(stage: StageInputs) -> StageResult:
        raise DataError("faces.csv, row 3: no rating")

    assert run_stage(_stage(), _args(project), call) == 1
    captured = capsys.readouterr()
    errors = [line for line in captured.err.splitlines() if "error" in line.lower()]  # MLflow logs its set-up too
    assert errors == ["error: faces.csv, row 3: no rating"] and captured.out == ""
    (run,) = _runs(project)
    assert run.info.status == "FAILED"


def test_an_unwritable_output_fails_before_any_work_or_run(project: Path, capsys) -> None:
    (project / "a_file").write_text("not a folder")
    called = []
    args = ["--params", str(project / "params.yaml"), "--prepared", str(project / "prepared")]
    assert run_stage(_stage(), [*args, "--out", str(project / "a_file" / "out")], called.append) == 1
    assert "cannot write this output" in capsys.readouterr().err
    assert called == [] and _runs(project) == []


def test_best_params_then_the_variant_are_applied_and_the_run_named_after_it(project: Path) -> None:
    (project / "best.yaml").write_text(yaml.safe_dump({"overrides": {"train": {"lr": 0.01, "batch_size": 8}}}))
    seen: list[StageInputs] = []
    stage = _stage(best_params=read_best_params)
    args = _args(project, "--best-params", str(project / "best.yaml"), "--variant", "slow")
    assert run_stage(stage, args, lambda inputs: seen.append(inputs)) == 0
    (inputs,) = seen
    assert inputs.params.train.lr == 0.0001 and inputs.params.train.batch_size == 8 and inputs.variant == "slow"
    (run,) = _runs(project)
    assert run.info.run_name == "variant@slow", "named as its DVC stage"
    assert run.data.tags[TAG_VARIANT] == "slow"
    assert run.data.params["train.lr"] == "0.0001"


def test_an_unknown_variant_is_named(project: Path, capsys) -> None:
    assert run_stage(_stage(best_params=read_best_params), _args(project, "--variant", "fast"), lambda s: None) == 1
    assert "variants: no variant named 'fast'" in capsys.readouterr().err


def test_other_ranks_compute_but_neither_write_nor_log(project: Path, monkeypatch, capsys) -> None:
    monkeypatch.setattr(rank_zero_only, "rank", 1)
    seen: list[StageInputs] = []
    (project / "a_file").write_text("not a folder")  # rank 0 checks the outputs; this rank does not
    args = ["--params", str(project / "params.yaml"), "--prepared", str(project / "prepared")]
    stage = _stage(every_rank=True)
    assert run_stage(stage, [*args, "--out", str(project / "a_file" / "out")], lambda s: seen.append(s)) == 0
    assert seen[0].run is None and seen[0].data is not None
    assert _runs(project) == [] and capsys.readouterr().out == ""


def test_the_stages_of_one_study_nest_under_its_run_with_descriptions_and_the_dataset(
    project: Path, monkeypatch
) -> None:
    monkeypatch.setenv(STUDY_ENV, "nightly-42")
    for name in ("first", "second"):
        assert run_stage(_stage(name=name, description=f"The {name} stage."), _args(project), lambda s: None) == 0
    runs = {run.info.run_name: run for run in _runs(project)}
    assert set(runs) == {"study nightly-42", "first", "second"}
    study = runs["study nightly-42"]
    assert study.info.status == "FINISHED" and study.data.tags[TAG_ROLE] == "study"
    for name in ("first", "second"):
        run = runs[name]
        assert run.data.tags[TAG_PARENT] == study.info.run_id and run.data.tags[TAG_STUDY] == "nightly-42"
        assert run.data.tags[TAG_DESCRIPTION] == f"The {name} stage."
        assert run.data.tags["mlflow.source.name"].endswith("test_stage.py")
        (dataset,) = run.inputs.dataset_inputs
        assert (dataset.dataset.name, dataset.dataset.digest) == ("prepared", "f00d")
        assert json.loads(dataset.dataset.profile) == {"faces": 4, "attributes": 1, "image_size": 8}
        assert dataset.tags[0].value == name


def test_a_stage_run_on_its_own_has_no_study(project: Path, monkeypatch) -> None:
    monkeypatch.delenv(STUDY_ENV, raising=False)
    assert run_stage(_stage(), _args(project), lambda s: None) == 0
    (run,) = _runs(project)
    assert TAG_PARENT not in run.data.tags and TAG_STUDY not in run.data.tags


def test_a_stage_with_nothing_to_log_makes_no_run(project: Path) -> None:
    seen: list[StageInputs] = []
    assert run_stage(_stage(tracked=lambda params: False), _args(project), seen.append) == 0
    assert seen[0].run is None and _runs(project) == []


def test_a_forked_pool_worker_terminated_inside_a_stage_ends_without_a_traceback(capfd) -> None:
    """A Pool terminates its forked workers with SIGTERM when its work is done; they inherit the stage's stop handler,
    which must let them die quietly instead of raising StageInterrupted (a traceback in every prepare log)."""
    with stopped_by_signals(), multiprocessing.get_context("fork").Pool(2) as pool:
        assert pool.map(abs, [-1, -2, -3]) == [1, 2, 3]
    assert "Traceback" not in capfd.readouterr().err
