"""Sweeps on CPU: shared studies, exact trial counts, pruning, failures, resume, MLflow records, best params."""

from __future__ import annotations

import runpy
from pathlib import Path

import optuna
import pandas as pd
import pytest
import yaml
from mlflow.tracking import MlflowClient

from facetraits.config import TrackingParams, load_params, merge_overrides
from facetraits.sweep import study as sweep_study
from facetraits.sweep.outputs import read_best_params, write_figures
from facetraits.sweep.trial_runs import TAG_PARENT, TAG_STATE, TAG_TRIAL
from facetraits.tracking import TAG_STAGE
from tests.conftest import REPO

pytestmark = pytest.mark.slow

prepare = runpy.run_path(str(REPO / "pipelines" / "prepare.py"))["main"]
sweep = runpy.run_path(str(REPO / "pipelines" / "sweep.py"))["main"]
train = runpy.run_path(str(REPO / "pipelines" / "train.py"))["main"]

SPACE = {
    "lr": {"low": 1e-4, "high": 5e-2, "log": True},
    "head": {"choices": ["linear", "mlp"]},
    "dropout": {"low": 0.0, "high": 0.5},
}


def _params_file(root: Path, tracking: TrackingParams, **sweep_keys) -> Path:
    params = {
        "data": {"image_size": 32, "synthetic": {"n_faces": 48}},
        "model": {"head_hidden": 8, "trainable_blocks": 0},
        "train": {"batch_size": 16, "max_epochs": 1, "progress_bar": False},
        "sweep": {"max_epochs": 3, "space": SPACE, **sweep_keys},
        "tracking": {"uri": tracking.uri, "experiment": tracking.experiment, "artifacts": tracking.artifacts},
    }
    path = root / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


@pytest.fixture
def project(tmp_path: Path, tracking: TrackingParams):
    def run(**sweep_keys) -> dict:
        params = _params_file(tmp_path, tracking, **sweep_keys)
        if not (tmp_path / "prepared").exists():
            assert prepare(["--params", str(params), "--out", str(tmp_path / "prepared"), "--summary", str(tmp_path / "p.json")]) == 0
        assert sweep(["--params", str(params), "--prepared", str(tmp_path / "prepared"), "--out", str(tmp_path / "sweep")]) == 0
        return {"params": params, "out": tmp_path / "sweep", "trials": pd.read_csv(tmp_path / "sweep" / "trials.csv")}

    return run


def _child_runs(tracking: TrackingParams) -> list:
    client = MlflowClient(tracking.uri)
    experiment = client.get_experiment_by_name(tracking.experiment)
    return client.search_runs([experiment.experiment_id], filter_string=f"tags.`{TAG_STAGE}` = 'sweep-trial'")


def test_two_workers_share_one_study_exactly(project, tracking: TrackingParams) -> None:
    result = project(n_trials=10, workers=2)
    trials = result["trials"]
    assert len(trials) == 10 and sorted(trials["number"]) == list(range(10))
    assert trials["worker"].nunique() == 2, "both worker processes ran trials"
    assert (trials["state"] == "PRUNED").sum() >= 1 and (trials["state"] == "COMPLETE").sum() >= 2
    children = _child_runs(tracking)
    assert sorted(int(r.data.tags[TAG_TRIAL]) for r in children) == list(range(10))
    by_number = {int(r.data.tags[TAG_TRIAL]): r for r in children}
    for _, trial in trials.iterrows():
        run = by_number[int(trial["number"])]
        assert run.data.tags[TAG_STATE] == trial["state"]
        assert float(run.data.params["lr"]) == pytest.approx(trial["param_lr"])
    (parent_id,) = {r.data.tags[TAG_PARENT] for r in children}
    parent = MlflowClient(tracking.uri).get_run(parent_id)
    assert parent.data.tags[TAG_STAGE] == "sweep" and parent.data.metrics["sweep/n_trials"] == 10
    assert {a.path for a in MlflowClient(tracking.uri).list_artifacts(parent_id, "sweep/figures")} >= {
        "sweep/figures/optimization_history.png"
    }
    best = yaml.safe_load((result["out"] / "best_params.yaml").read_text())
    assert best["value"] == pytest.approx(trials.loc[trials["state"] == "COMPLETE", "value"].max())


def test_a_resumed_study_adds_trials(project) -> None:
    first = project(n_trials=3)
    second = project(n_trials=5)
    assert len(second["trials"]) == 5
    kept = second["trials"].set_index("number").loc[first["trials"]["number"], "value"]
    assert list(kept) == pytest.approx(list(first["trials"].set_index("number")["value"]))


def test_failing_trial_is_recorded_and_the_study_goes_on(project, tracking: TrackingParams, monkeypatch) -> None:
    real = sweep_study.fit_heads_on_features
    calls = {"n": 0}

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("CUDA out of memory (simulated)")
        return real(*args, **kwargs)

    monkeypatch.setattr(sweep_study, "fit_heads_on_features", flaky)
    trials = project(n_trials=4, workers=1, pruner="none")["trials"]
    assert len(trials) == 4
    failed = trials[trials["state"] == "FAIL"]
    assert len(failed) == 1 and "CUDA out of memory (simulated)" in failed["fail_reason"].iloc[0]
    (run,) = [r for r in _child_runs(tracking) if r.data.tags[TAG_STATE] == "FAIL"]
    assert run.info.status == "FAILED" and "out of memory" in run.data.tags["optuna.fail_reason"]


def test_a_nan_loss_fails_the_trial(project, monkeypatch) -> None:
    real = sweep_study.fit_heads_on_features

    def diverging(*args, **kwargs):
        history = real(*args, **kwargs)
        history.loc[history.index[-1], "train/loss"] = float("nan")
        return history

    monkeypatch.setattr(sweep_study, "fit_heads_on_features", diverging)
    trials = project(n_trials=2, workers=1, pruner="none")["trials"]
    assert list(trials["state"]) == ["FAIL", "FAIL"]
    assert trials["fail_reason"].str.contains("training diverged: train/loss").all()


def test_best_params_round_trip_into_train(project, tracking: TrackingParams, tmp_path: Path) -> None:
    result = project(n_trials=3, workers=1)
    overrides = read_best_params(result["out"] / "best_params.yaml")
    assert set(overrides) <= {"model", "train"} and overrides
    args = ["--params", str(result["params"]), "--prepared", str(tmp_path / "prepared"), "--models", str(tmp_path / "m"),
            "--out", str(tmp_path / "r"), "--best-params", str(result["out"] / "best_params.yaml")]  # fmt: skip
    assert train(args) == 0
    expected = merge_overrides(load_params(result["params"]), overrides)
    client = MlflowClient(tracking.uri)
    experiment = client.get_experiment_by_name(tracking.experiment)
    (run,) = client.search_runs([experiment.experiment_id], filter_string=f"tags.`{TAG_STAGE}` = 'train'")
    assert float(run.data.params["train.lr"]) == pytest.approx(expected.train.lr)
    assert run.data.params["model.head"] == expected.model.head


def test_zero_trials_skips_and_leaves_params_as_written(project) -> None:
    result = project(n_trials=0)
    assert read_best_params(result["out"] / "best_params.yaml") == {}
    assert result["trials"].empty


def test_worker_quotas_sum_exactly() -> None:
    assert sweep_study.worker_quotas(10, 3) == [4, 3, 3]
    assert sum(sweep_study.worker_quotas(7, 4)) == 7
    assert sweep_study.worker_quotas(0, 2) == [0, 0]


def test_unreachable_storage_is_named(tmp_path: Path) -> None:
    params = load_params(REPO / "params.yaml")
    with pytest.raises(Exception, match="sweep.storage: cannot open study 'x' at sqlite:////nonexistent/dir/db"):
        sweep_study.open_study("x", "sqlite:////nonexistent/dir/db", params.sweep, 0)
    assert optuna.__version__.startswith("5")


def test_a_worker_from_another_node_joins_by_name(project, tmp_path: Path) -> None:
    from facetraits.cli import main as cli

    result = project(n_trials=2, workers=1)
    best = yaml.safe_load((result["out"] / "best_params.yaml").read_text())
    storage = f"sqlite:///{(result['out'] / 'optuna.db').resolve()}"
    args = ["sweep-worker", "--study", best["study"], "--storage", storage, "--n-trials", "2",
            "--params", str(result["params"]), "--prepared", str(tmp_path / "prepared"), "--cache", str(result["out"] / "cache")]  # fmt: skip
    assert cli(args) == 0
    study = optuna.load_study(study_name=best["study"], storage=storage)
    assert len(study.trials) == 4 and all(t.state.is_finished() for t in study.trials)


def test_figures_folder_is_replaced_whole(tmp_path: Path) -> None:
    """A DVC output kept in place while the stage runs (persist): no figure of an earlier sweep may stay."""
    folder = tmp_path / "figures"
    folder.mkdir()
    (folder / "param_importances.png").write_bytes(b"from an earlier sweep")
    assert write_figures(None, folder) == [] and list(folder.iterdir()) == []
