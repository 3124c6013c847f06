"""A linear probe through the stages: trained by the train stage, then used by predict, explain and manifold
exactly as a fine-tuned model is (one checkpoint format)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from PIL import Image

from facetraits.cli import main as cli
from facetraits.data.images import load_face
from facetraits.models.face_module import load_module
from tests.pipelines.conftest import _stage_run, stage

pytestmark = pytest.mark.slow
ATTRIBUTES = ["happy", "dominant", "attractive"]


@pytest.fixture(scope="module")
def probed(trained, tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("probe")
    params = yaml.safe_load((trained["root"] / "params.yaml").read_text())
    params["model"] = {"backbone": "mobilenet_v2", "pool": "avgmax", "hflip_average": True}
    params["train"] = {**params["train"], "protocol": "probe", "ridge_alphas": [1.0, 100.0], "fit_on": "train+val"}
    params["tracking"] = {**params["tracking"], "experiment": "probe-stage"}
    params["explain"] = {**params["explain"], "methods": ["gradcam", "guided_gradcam"], "mean_faces": 3, "score_faces": 2}
    params["manifold"] = {"methods": ["pca"], "dims": [2], "permutations": 9}
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    paths = {"params": root / "params.yaml", "prepared": trained["prepared"], "models": root / "models"}
    args = [x for key, value in paths.items() for x in (f"--{key}", str(value))]
    assert stage("train")([*args, "--out", str(root / "train")]) == 0
    tracking = trained["tracking"]
    study = {"client": trained["client"], "tracking": type(tracking)(tracking.uri, "probe-stage", tracking.artifacts)}
    return {
        "root": root, "args": args, "prepared": trained["prepared"], "models": root / "models",
        "run": _stage_run(study, "train"), **study,
    }  # fmt: skip


def test_probe_run_logs_metrics_penalties_and_a_model(probed) -> None:
    metrics = json.loads((probed["root"] / "train" / "metrics.json").read_text())
    assert set(metrics["test"]["pearson"]) == set(ATTRIBUTES) and metrics["epochs"] == {"all": 1}
    # refitted on train+val (train.fit_on): the val faces were fitted, so no val score is reported anywhere
    assert "val" not in metrics
    history = pd.read_csv(probed["root"] / "train" / "history.csv")
    assert history["val_pearson_mean"].isna().all() and history["train_loss"].notna().all()
    run = probed["run"]
    assert run.data.params["train.protocol"] == "probe"
    assert {f"test/pearson/{a}" for a in ATTRIBUTES} <= set(run.data.metrics)
    assert {f"probe/log10_alpha/{a}" for a in ATTRIBUTES} <= set(run.data.metrics) and "probe/fit_seconds" in run.data.metrics
    assert not any(key.startswith("val/") for key in run.data.metrics)
    (output,) = run.outputs.model_outputs
    assert probed["client"].get_logged_model(output.model_id).source_run_id == run.info.run_id


def test_predict_cli_on_the_probe_checkpoint_is_its_forward_pass(probed, tmp_path: Path) -> None:
    files = [tmp_path / "a.png", tmp_path / "b.png"]
    for seed, path in enumerate(files):
        Image.fromarray(np.random.default_rng(seed).integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(path)
    out = tmp_path / "pred.csv"
    assert cli(["predict", *map(str, files), "--model", str(probed["models"] / "best.ckpt"), "--out", str(out)]) == 0
    net = load_module(probed["models"] / "best.ckpt").net
    batch = np.stack([load_face(p, 32, "pad", 10**7) for p in files])
    with torch.no_grad():
        expected = net(torch.from_numpy(batch).permute(0, 3, 1, 2).float() / 255).numpy()
    np.testing.assert_allclose(pd.read_csv(out)[ATTRIBUTES].to_numpy(), expected, rtol=1e-5, atol=1e-5)


def test_explain_and_manifold_stages_use_the_probe(probed) -> None:
    explain_out, manifold_out = probed["root"] / "explain", probed["root"] / "manifold"
    assert stage("explain")([*probed["args"], "--out", str(explain_out)]) == 0
    scores = json.loads((explain_out / "scores.json").read_text())
    assert json.dumps(scores).count("guided_gradcam") > 0
    root = probed["root"]
    paths = {"params": root / "params.yaml", "prepared": probed["prepared"], "train": root / "train"}
    manifold_args = [x for key, value in paths.items() for x in (f"--{key}", str(value))]
    assert stage("manifold")([*manifold_args, "--out", str(manifold_out)]) == 0
    assert (manifold_out / "metrics.json").is_file()
