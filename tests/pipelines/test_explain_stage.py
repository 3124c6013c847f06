"""The explain stage on the tiny trained study: files for DVC, the MLflow run, and the explain CLI."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from PIL import Image

from facetraits.cli import main as cli
from tests.pipelines.conftest import EXPLAIN, stage

pytestmark = pytest.mark.slow

def test_every_attribute_and_method_has_gallery_maps_and_scores(explained) -> None:
    out = explained["explain"]
    scores = json.loads((out / "scores.json").read_text())
    assert set(scores["attributes"]) == {"happy", "dominant"}
    for attribute in ("happy", "dominant"):
        assert set(scores["attributes"][attribute]) == {*EXPLAIN["methods"], "reference", "top_region"}
        assert 0 < scores["attributes"][attribute]["reference"]["mask_area_fraction"] < 1
        for method in EXPLAIN["methods"]:
            entry = scores["attributes"][attribute][method]
            maps = np.load(out / attribute / method / "maps.npy")
            assert maps.shape[1:] == (32, 32) and maps.shape[0] >= 4 and np.isfinite(maps).all()
            in_mean = pd.read_csv(out / attribute / "faces.csv")["in_mean"].to_numpy()
            # undefined (null) only where every map is constant, e.g. (Guided) Grad-CAM of a 2x2 block-5 map ReLU'd
            # to zero, or guided backprop stopped by the head's ReLU: a constant map ranks nothing
            keys = ("mass_accuracy", "rank_accuracy", "region_mass_accuracy", "region_rank_accuracy")
            for key, low in (*((k, 0) for k in keys), ("randomization_rank_corr", -1)):
                value = entry[key]
                assert (value is None and method.endswith("gradcam")) or low <= value <= 1, (method, key)
            if entry["rank_accuracy"] is None:
                assert (np.ptp(maps[in_mean].reshape(in_mean.sum(), -1), axis=1) == 0).all()
            assert "maps_per_s" not in entry, "timings go to MLflow only: `dvc metrics diff` compares scores"
            assert Image.open(out / attribute / method / "gallery.png").size[0] > 100
        assert Image.open(out / attribute / "mean.png").size[0] > 100
    assert (out / "mean_heatmaps.png").is_file()


def test_maps_are_also_scored_in_the_region_whose_occlusion_moves_the_prediction_most(explained) -> None:
    """A reference for faces with no generator: the top region of the stage's own region importance table."""
    out = explained["explain"]
    scores = json.loads((out / "scores.json").read_text())
    table = pd.read_csv(out / "region_importance.csv")
    face = table[(table["model"] == "main") & (table["region"] != "background")]
    for attribute in ("happy", "dominant"):
        rows = face[face["attribute"] == attribute]
        top = rows.loc[rows["importance"].idxmax()]
        entry = scores["attributes"][attribute]
        assert entry["top_region"] == top["region"]
        # a uniform map's mass in the region is the region's share of the image: the chance level
        assert entry["reference"]["region_mask_area_fraction"] == pytest.approx(top["area"], abs=1e-3)
        for method in EXPLAIN["methods"]:
            value = entry[method]["region_mass_accuracy"]
            assert (value is None and method.endswith("gradcam")) or 0 <= value <= 1


def test_every_score_has_its_interval_and_the_randomization_check_its_test(explained) -> None:
    scores = json.loads((explained["explain"] / "scores.json").read_text())
    entries = [scores["mean"][m] for m in EXPLAIN["methods"]]
    entries += [scores["attributes"][a][m] for a in ("happy", "dominant") for m in EXPLAIN["methods"]]
    for entry in entries:
        for key in ("deletion_auc", "insertion_auc", "randomization_rank_corr", "mass_accuracy"):
            value, low, high = entry[key], entry[f"{key}_ci_low"], entry[f"{key}_ci_high"]
            assert (value is None and low is None and high is None) or low <= value <= high, (key, entry)
        assert entry["randomization_p"] is None or 0 < entry["randomization_p"] <= 1


def test_mlflow_charts_each_methods_means_and_holds_the_per_attribute_files(explained) -> None:
    client, run = explained["client"], explained["explain_run"]
    assert run.info.status == "FINISHED"
    assert run.data.params["explain.methods"] == str(EXPLAIN["methods"])
    scores = json.loads((explained["explain"] / "scores.json").read_text())
    for method in EXPLAIN["methods"]:
        assert run.data.metrics[f"explain/{method}/insertion_auc"] == scores["mean"][method]["insertion_auc"]
        assert run.data.metrics[f"explain/{method}/mass_accuracy"] == scores["mean"][method]["mass_accuracy"]
        assert run.data.metrics[f"explain/{method}/maps_per_s"] > 0
    assert not [key for key in run.data.metrics if "/happy/" in key], "per-attribute scores are in scores.json only"
    happy = {a.path for a in client.list_artifacts(run.info.run_id, "explain/happy")}
    assert {"explain/happy/mean.png", "explain/happy/faces.csv", "explain/happy/gradcam"} <= happy
    gradcam = {a.path for a in client.list_artifacts(run.info.run_id, "explain/happy/gradcam")}
    assert gradcam == {"explain/happy/gradcam/gallery.png"}, "the .npy maps stay in the DVC output"
    top = {a.path for a in client.list_artifacts(run.info.run_id, "explain")}
    assert {"explain/scores.json", "explain/mean_heatmaps.png"} <= top


def test_explain_cli_writes_an_overlay_for_one_image(explained, tmp_path) -> None:
    face = np.asarray(np.load(explained["prepared"] / "images.npy", mmap_mode="r")[0])
    Image.fromarray(face).resize((80, 100)).save(tmp_path / "face.png")
    model = str(explained["models"] / "best.ckpt")
    assert cli(["explain", str(tmp_path / "face.png"), "--attribute", "happy", "--model", model]) == 0
    written = tmp_path / "face_happy_gradcam.png"
    assert Image.open(written).size[0] > 300
    assert cli(["explain", str(tmp_path / "face.png"), "--attribute", "nonsense", "--model", model]) == 1


def test_explain_refuses_attributes_the_data_lacks(trained, tmp_path, capsys) -> None:
    params = yaml.safe_load((trained["root"] / "params.yaml").read_text())
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({**params, "explain": {"attributes": ["smug"]}}))
    args = ["--prepared", str(trained["prepared"]), "--models", str(trained["models"]), "--out", str(tmp_path / "explain")]
    assert stage("explain")(["--params", str(tmp_path / "params.yaml"), *args]) == 1
    assert "explain.attributes: ['smug'] not in the prepared data" in capsys.readouterr().err
    assert not (tmp_path / "explain").exists()


def test_explain_refuses_attributes_no_checkpoint_predicts(trained, tmp_path, capsys) -> None:
    """A per-attribute models folder whose only checkpoint predicts `happy`, asked for `dominant`."""
    content = torch.load(trained["models"] / "best.ckpt", weights_only=True)
    hparams = content["hyper_parameters"]
    keep = hparams["attributes"].index("happy")
    for key in ("attributes", "target_mean", "target_std"):
        hparams[key] = hparams[key][keep : keep + 1]
    per_attribute = ("net.heads.", "net.target_")
    content["state_dict"] = {
        k: v[keep : keep + 1] if k.startswith(per_attribute) else v for k, v in content["state_dict"].items()
    }
    (tmp_path / "models" / "happy").mkdir(parents=True)
    torch.save(content, tmp_path / "models" / "happy" / "best.ckpt")
    params = yaml.safe_load((trained["root"] / "params.yaml").read_text())
    explain = {**EXPLAIN, "attributes": ["dominant"]}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({**params, "explain": explain}))
    args = ["--prepared", str(trained["prepared"]), "--models", str(tmp_path / "models")]
    args += ["--out", str(tmp_path / "explain")]
    assert stage("explain")(["--params", str(tmp_path / "params.yaml"), *args]) == 1
    error = capsys.readouterr().err
    assert f"{tmp_path / 'params.yaml'}: explain.attributes: no checkpoint under {tmp_path / 'models'}" in error
    assert "['dominant']" in error
    assert not (tmp_path / "explain").exists()
