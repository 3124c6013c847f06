import json

import mlflow
import pytest
import torch
from lightning.pytorch.loggers import MLFlowLogger

from facetraits.models.scheduling import RECORD_FILE, attribute_workers, fit_per_attribute
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
