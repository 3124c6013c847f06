import json

import mlflow
import pytest
import torch
from lightning.pytorch.loggers import MLFlowLogger

from facetraits.errors import ConfigError
from facetraits.models import scheduling
from facetraits.models.scheduling import RECORD_FILE, attribute_workers, fit_attribute_slice, fit_per_attribute
from facetraits.models.slices import attribute_slice, detach_from_launcher, task_slot
from tests.models.conftest import tiny_params

PER_ATTRIBUTE = {"protocol": "per_attribute", "max_epochs": 2, "patience": 10}


def _subset(data, attributes):
    return type(data)(data.root, data.images, data.faces, {**data.meta, "attributes": list(attributes)})


def _weights(checkpoint):
    return torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"]


@pytest.fixture
def one_thread():
    """Workers share the parent's threads (1 // 2 -> 1 each); the serial reference must use as many, because
    the thread count changes float rounding in the CPU kernels (about 1e-3 in weights after 2 epochs)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.slow
def test_two_processes_give_the_serial_loops_models_and_scores(tiny_data, tmp_path, one_thread) -> None:
    data = _subset(tiny_data, ["happy", "dominant", "trustworthy"])
    serial = tiny_params(train={**PER_ATTRIBUTE, "attribute_workers": 1})
    serial_fits = fit_per_attribute(data, serial.model, serial.train, tmp_path / "serial")
    params = tiny_params(train={**PER_ATTRIBUTE, "attribute_workers": 2})
    parallel = fit_per_attribute(data, params.model, params.train, tmp_path / "parallel")
    assert [fit.attributes for fit in parallel] == [("happy",), ("dominant",), ("trustworthy",)]
    for one, two in zip(serial_fits, parallel, strict=True):
        assert two.best_checkpoint == tmp_path / "parallel" / one.attributes[0] / "best.ckpt"
        first, second = _weights(one.best_checkpoint), _weights(two.best_checkpoint)
        assert first.keys() == second.keys()
        assert all(torch.equal(first[key], second[key]) for key in first)
        assert one.test == two.test
        assert one.history.equals(two.history) and list(two.history["epoch"]) == [0, 1]


def test_finished_attributes_are_skipped_and_a_changed_configuration_refits(tiny_data, tmp_path) -> None:
    data = _subset(tiny_data, ["happy", "dominant"])
    params = tiny_params(train={**PER_ATTRIBUTE, "attribute_workers": 1})
    first = fit_per_attribute(data, params.model, params.train, tmp_path)
    stamps = {fit.attributes: fit.best_checkpoint.stat().st_mtime_ns for fit in first}
    (tmp_path / "dominant" / RECORD_FILE).unlink()  # as if killed after happy was done
    again = fit_per_attribute(data, params.model, params.train, tmp_path)
    assert again[0].best_checkpoint.stat().st_mtime_ns == stamps[("happy",)]  # skipped
    assert again[0].test == first[0].test and again[0].history.equals(first[0].history)
    assert again[1].best_checkpoint.stat().st_mtime_ns != stamps[("dominant",)]  # refitted
    other = tiny_params(train={**PER_ATTRIBUTE, "attribute_workers": 1, "lr": 0.01})
    fit_per_attribute(data, other.model, other.train, tmp_path)
    assert (tmp_path / "happy" / "best.ckpt").stat().st_mtime_ns != stamps[("happy",)]
    record = json.loads((tmp_path / "happy" / RECORD_FILE).read_text())
    assert record["attributes"] == ["happy"] and len(record["history"]) == 2


def test_recorded_metrics_reach_one_mlflow_run_under_each_attributes_prefix(tiny_data, tmp_path, tracking) -> None:
    data = _subset(tiny_data, ["happy", "dominant"])
    params = tiny_params(train={**PER_ATTRIBUTE, "attribute_workers": 1})
    mlflow.set_tracking_uri(tracking.uri)
    run = mlflow.MlflowClient().create_run(mlflow.MlflowClient().create_experiment(tracking.experiment))
    run_id = run.info.run_id
    fits = fit_per_attribute(data, params.model, params.train, tmp_path,
                             lambda prefix: MLFlowLogger(tracking_uri=tracking.uri, run_id=run_id, prefix=prefix or ""))  # fmt: skip
    client = mlflow.MlflowClient(tracking.uri)
    for fit in fits:
        name = fit.attributes[0]
        history = client.get_metric_history(run_id, f"{name}-val/pearson_mean")
        assert [m.value for m in sorted(history, key=lambda m: m.step)] == pytest.approx(list(fit.history["val/pearson_mean"]))


def test_worker_count_is_bounded_by_the_attributes() -> None:
    assert attribute_workers(tiny_params(train={"attribute_workers": 4, "accelerator": "cpu"}).train, 3) == 3
    assert attribute_workers(tiny_params(train={"attribute_workers": 2, "accelerator": "cpu"}).train, 10) == 2
    assert attribute_workers(tiny_params(train={"accelerator": "cpu"}).train, 1) == 1


def test_task_slot_reads_torchrun_then_slurm_and_names_a_bad_value() -> None:
    assert task_slot({}) == (0, 1)
    assert task_slot({"SLURM_PROCID": "3", "SLURM_NTASKS": "8"}) == (3, 8)
    assert task_slot({"RANK": "1", "WORLD_SIZE": "2", "SLURM_PROCID": "3", "SLURM_NTASKS": "8"}) == (1, 2)
    with pytest.raises(ConfigError, match=r"\$SLURM_NTASKS='eight'"):
        task_slot({"SLURM_PROCID": "3", "SLURM_NTASKS": "eight"})


def test_slices_split_the_attributes_evenly_without_overlap() -> None:
    attributes = [f"a{i}" for i in range(7)]
    shares = [attribute_slice(attributes, rank, 3) for rank in range(3)]
    assert shares == [["a0", "a3", "a6"], ["a1", "a4"], ["a2", "a5"]]
    assert sorted(sum(shares, [])) == attributes
    with pytest.raises(ConfigError, match="rank must be in 0..2"):
        attribute_slice(attributes, 3, 3)


def test_launcher_variables_are_dropped_for_independent_fits() -> None:
    environ = {"RANK": "1", "WORLD_SIZE": "2", "SLURM_NTASKS": "2", "SLURM_PROCID": "1", "PATH": "/bin", "SLURM_JOB_ID": "7"}
    detach_from_launcher(environ)
    assert environ == {"PATH": "/bin", "SLURM_JOB_ID": "7"}


def test_two_task_slices_leave_every_record_and_the_stage_only_collects(tiny_data, tmp_path, monkeypatch) -> None:
    """Tasks of a multi-node launch fit disjoint shares into one shared folder; the train stage afterwards fits
    nothing and returns each task's models, as the serial loop would have."""
    data = _subset(tiny_data, ["happy", "dominant", "trustworthy"])
    params = tiny_params(train={**PER_ATTRIBUTE, "attribute_workers": 1})
    assert fit_attribute_slice(data, params.model, params.train, tmp_path, 1, 2) == ["dominant"]
    assert not (tmp_path / "happy").exists() and (tmp_path / "dominant" / RECORD_FILE).is_file()
    assert fit_attribute_slice(data, params.model, params.train, tmp_path, 0, 2) == ["happy", "trustworthy"]
    records = {a: json.loads((tmp_path / a / RECORD_FILE).read_text()) for a in data.attributes}

    def no_fit(*args, **kwargs):
        raise AssertionError("the collecting run must not fit")

    monkeypatch.setattr(scheduling, "fit_one_attribute", no_fit)
    fits = fit_per_attribute(data, params.model, params.train, tmp_path)
    assert [fit.attributes for fit in fits] == [("happy",), ("dominant",), ("trustworthy",)]
    for fit in fits:
        record = records[fit.attributes[0]]
        assert fit.best_checkpoint == tmp_path / fit.attributes[0] / "best.ckpt"
        assert fit.test == pytest.approx(record["test"]) and len(fit.history) == len(record["history"]) == 2
    shared = tiny_params(train={"protocol": "shared"})
    with pytest.raises(ConfigError, match="only per_attribute"):
        fit_attribute_slice(data, shared.model, shared.train, tmp_path, 0, 2)
