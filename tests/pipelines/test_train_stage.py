"""The train stage end to end on tiny synthetic data: outputs, the MLflow run, the logged model and predict."""

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from facetraits.cli import main as cli
from facetraits.data.images import load_face
from facetraits.models.face_module import load_module
from facetraits.tracking import TAG_FINGERPRINT

pytestmark = pytest.mark.slow

def test_outputs_for_dvc(trained) -> None:
    out = trained["out"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["test"]["pearson"]) == {"happy", "dominant", "attractive"}
    assert metrics["test"]["pearson_mean"] == pytest.approx(np.mean(list(metrics["test"]["pearson"].values())), abs=1e-6)
    history = pd.read_csv(out / "history.csv")
    assert list(history.columns) == ["epoch", "train_loss", "val_loss", "val_pearson_mean"] and list(history["epoch"]) == [0, 1]
    predictions = pd.read_csv(out / "predictions.csv")
    assert len(predictions) == 40 * 3 and set(predictions["split"]) == {"train", "val", "test"}
    assert (out / "figures" / "learning_curves.png").is_file() and (out / "figures" / "scatter" / "happy.png").is_file()
    assert {p.name for p in trained["models"].iterdir()} >= {"best.ckpt", "last.ckpt", "train_state.json"}


def test_per_attribute_curves_average_to_the_epochs_mean_val_pearson(trained) -> None:
    """results/train/val_pearson.csv (DVC plots' per-attribute curves) holds each attribute's val r per epoch."""
    curves = pd.read_csv(trained["out"] / "val_pearson.csv")
    assert list(curves.columns) == ["epoch", "attribute", "val_pearson"]
    assert sorted(zip(curves["epoch"], curves["attribute"])) == [
        (epoch, attribute) for epoch in (0, 1) for attribute in ("attractive", "dominant", "happy")
    ]
    history = pd.read_csv(trained["out"] / "history.csv").set_index("epoch")["val_pearson_mean"]
    means = curves.groupby("epoch")["val_pearson"].mean()
    np.testing.assert_allclose(means.to_numpy(), history.loc[means.index].to_numpy(), atol=1e-6)


def test_mlflow_run_holds_params_tags_epoch_metrics_and_artifacts(trained) -> None:
    client, run = trained["client"], trained["run"]
    assert run.info.status == "FINISHED"
    prepared_meta = json.loads((trained["prepared"] / "meta.json").read_text())
    assert run.data.tags[TAG_FINGERPRINT] == prepared_meta["fingerprint"]
    assert run.data.params["model.backbone"] == "vgg16_bn" and run.data.params["train.max_epochs"] == "2"
    per_epoch = client.get_metric_history(run.info.run_id, "val/pearson/happy")
    assert [m.step for m in per_epoch] == [0, 1], "stepped by epoch, the UI's x-axis"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train/loss")] == [0, 1]
    assert len(client.get_metric_history(run.info.run_id, "test/pearson/happy")) == 1, "a final value is logged once"
    assert "epoch" not in run.data.metrics
    assert all(key.split(".")[0] in ("data", "model", "train") for key in run.data.params), "params once, as in params.yaml"
    assert any(key.startswith("system/cpu_utilization") for key in run.data.metrics), "system metrics while training"
    metrics = json.loads((trained["out"] / "metrics.json").read_text())
    assert run.data.metrics["test/pearson/happy"] == pytest.approx(metrics["test"]["pearson"]["happy"])
    assert run.data.metrics["test/mae_mean"] == pytest.approx(metrics["test"]["mae_mean"])
    artifacts = {a.path for folder in ("train", "train/figures") for a in client.list_artifacts(run.info.run_id, folder)}
    assert {"train/metrics.json", "train/predictions.csv", "train/figures/learning_curves.png"} <= artifacts
    scatter = {a.path for a in client.list_artifacts(run.info.run_id, "train/figures/scatter")}
    assert scatter == {f"train/figures/scatter/{a}.png" for a in ("happy", "dominant", "attractive")}


def test_logged_model_matches_the_checkpoint(trained) -> None:
    mlflow.set_tracking_uri(trained["tracking"].uri)
    uri = f"runs:/{trained['run'].info.run_id}/main"
    logged = mlflow.pytorch.load_model(uri)
    info = mlflow.models.get_model_info(uri)
    assert info.metadata["attributes"] == ["happy", "dominant", "attractive"]
    net = load_module(trained["models"] / "best.ckpt").net
    images = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(logged(images), net(images), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(info.metadata["target_std"], net.target_std.numpy(), rtol=1e-6)


def test_the_model_is_a_logged_model_linked_to_its_scores_and_registered_with_the_alias(trained) -> None:
    client, run, tracking = trained["client"], trained["run"], trained["tracking"]
    (output,) = run.outputs.model_outputs
    model = client.get_logged_model(output.model_id)
    assert (model.name, model.source_run_id, model.status.to_int()) == ("main", run.info.run_id, 2)  # READY
    assert model.params["model.backbone"] == "vgg16_bn"
    linked = {m.key: m.value for m in model.metrics}
    assert linked["test/pearson/happy"] == run.data.metrics["test/pearson/happy"]
    champion = client.get_model_version_by_alias(tracking.experiment, "champion")
    assert (champion.source, champion.run_id) == (f"models:/{model.model_id}", run.info.run_id)
    metrics = json.loads((trained["out"] / "metrics.json").read_text())
    assert float(champion.tags["val_pearson_mean"]) == pytest.approx(metrics["val"]["pearson_mean"], abs=1e-6)


def test_predict_cli_matches_the_forward_pass(trained, tmp_path: Path) -> None:
    folder = tmp_path / "faces"
    (folder / "sub").mkdir(parents=True)
    rng = np.random.default_rng(0)
    files = [folder / "a.png", folder / "sub" / "b.jpg"]
    for path in files:
        Image.fromarray(rng.integers(0, 255, (40, 30, 3), dtype=np.uint8)).save(path)
    out = tmp_path / "pred.csv"
    assert cli(["predict", str(folder), "--model", str(trained["models"] / "best.ckpt"), "--out", str(out)]) == 0
    table = pd.read_csv(out)
    assert list(table.columns) == ["image", "happy", "dominant", "attractive"]
    assert list(table["image"]) == [str(p) for p in files]
    net = load_module(trained["models"] / "best.ckpt").net
    batch = np.stack([load_face(p, 32, "pad", 10**7) for p in files])
    with torch.no_grad():
        expected = net(torch.from_numpy(batch).permute(0, 3, 1, 2).float() / 255).numpy()
    np.testing.assert_allclose(table[["happy", "dominant", "attractive"]].to_numpy(), expected, rtol=1e-5)

    mlflow.set_tracking_uri(trained["tracking"].uri)
    via_mlflow = tmp_path / "pred_mlflow.csv"
    uri = f"runs:/{trained['run'].info.run_id}/main"
    assert cli(["predict", str(folder), "--model", uri, "--out", str(via_mlflow)]) == 0
    np.testing.assert_allclose(pd.read_csv(via_mlflow).iloc[:, 1:].to_numpy(), expected, rtol=1e-4, atol=1e-4)

    # the registered champion, found through the study's params.yaml alone, in a fresh process
    champion = subprocess.run(
        [str(Path(sys.executable).parent / "facetraits"), "predict", str(folder), "--model",
         f"models:/{trained['tracking'].experiment}@champion"],
        cwd=trained["root"], env={k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"},
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert champion.returncode == 0, champion.stderr[-2000:]
    table = pd.read_csv(io.StringIO(champion.stdout))
    np.testing.assert_allclose(table.iloc[:, 1:].to_numpy(), expected, rtol=1e-4, atol=1e-4)


def test_predict_names_a_missing_path(trained, tmp_path: Path, capsys) -> None:
    assert cli(["predict", str(tmp_path / "nothing.jpg"), "--model", str(trained["models"] / "best.ckpt")]) == 1
    assert "nothing.jpg: no such image file or folder" in capsys.readouterr().err
