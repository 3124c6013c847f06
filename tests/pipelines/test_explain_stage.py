"""The explain stage on the tiny trained study: files for DVC, the MLflow run, and the explain CLI."""

import json

import numpy as np
import pytest
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
        assert set(scores["attributes"][attribute]) == {*EXPLAIN["methods"], "reference"}
        assert 0 < scores["attributes"][attribute]["reference"]["mask_area_fraction"] < 1
        for method in EXPLAIN["methods"]:
            entry = scores["attributes"][attribute][method]
            assert 0 <= entry["mass_accuracy"] <= 1 and 0 <= entry["rank_accuracy"] <= 1
            # undefined (null) only where every map is constant, e.g. (Guided) Grad-CAM of a 2x2 block-5 map ReLU'd to zero
            correlation = entry["randomization_rank_corr"]
            assert (correlation is None and method.endswith("gradcam")) or -1 <= correlation <= 1
            assert entry["maps_per_s"] > 0
            maps = np.load(out / attribute / method / "maps.npy")
            assert maps.shape[1:] == (32, 32) and maps.shape[0] >= 4 and np.isfinite(maps).all()
            assert Image.open(out / attribute / method / "gallery.png").size[0] > 100
        assert Image.open(out / attribute / "mean.png").size[0] > 100
    assert (out / "mean_heatmaps.png").is_file()


def test_mlflow_holds_scores_and_artifacts_grouped_by_attribute(explained) -> None:
    client, run = explained["client"], explained["explain_run"]
    assert run.info.status == "FINISHED"
    assert run.data.params["explain.methods"] == str(EXPLAIN["methods"])
    scores = json.loads((explained["explain"] / "scores.json").read_text())
    for method in EXPLAIN["methods"]:
        assert run.data.metrics[f"explain/{method}/insertion_auc"] == scores["mean"][method]["insertion_auc"]
        assert run.data.metrics[f"explain/happy/{method}/mass_accuracy"] == scores["attributes"]["happy"][method]["mass_accuracy"]
    happy = {a.path for a in client.list_artifacts(run.info.run_id, "explain/happy")}
    assert {"explain/happy/mean.png", "explain/happy/faces.csv", "explain/happy/gradcam"} <= happy
    gradcam = {a.path for a in client.list_artifacts(run.info.run_id, "explain/happy/gradcam")}
    assert gradcam == {"explain/happy/gradcam/gallery.png", "explain/happy/gradcam/maps.npy"}
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
