"""The ensemble stage on the tiny study: weights chosen on the members' val predictions, the combined predictions
and scores, and one MLflow model that `predict` loads and that rates images as the weighted members do."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from facetraits.data.prepared import load_prepared, read_predictions
from facetraits.models.ensemble import simplex_grid
from facetraits.models.inference import image_tensor, load_net
from facetraits.numbers import pearson_columns
from facetraits.predict import load_predictor
from tests.pipelines.conftest import _stage_run, stage, stage_args

pytestmark = pytest.mark.slow
MEMBERS = ("main", "no_augment")


def _member_predictions(ensembled, file: str, ids) -> np.ndarray:
    data = load_prepared(ensembled["prepared"])
    folders = {"main": ensembled["results"] / "train", "no_augment": ensembled["results"] / "variants" / "no_augment"}
    return np.stack([read_predictions(folders[m] / file, ids, data.attributes) for m in MEMBERS])


def test_weights_are_the_best_on_val_and_the_predictions_their_weighted_sum(ensembled) -> None:
    data = load_prepared(ensembled["prepared"])
    human = data.faces[list(data.attributes)].to_numpy(np.float64)
    val_ids = data.faces["id"].iloc[data.indices("val")]
    val = _member_predictions(ensembled, "val_predictions.csv", val_ids)
    # fitted on train, each member's val predictions are its predictions of the val faces
    everyone = _member_predictions(ensembled, "predictions.csv", data.faces["id"])
    np.testing.assert_allclose(val, everyone[:, data.indices("val")])
    chosen = json.loads((ensembled["results"] / "ensemble" / "weights.json").read_text())
    weights = np.array([[chosen["weights"][a][m] for m in MEMBERS] for a in data.attributes])
    assert (weights == weights[0]).all() and weights[0].sum() == pytest.approx(1.0)  # one set for all attributes
    # no weight vector of the grid (step 0.25) does better on val than the chosen one
    human_val = human[data.indices("val")]
    score = lambda w: pearson_columns(np.einsum("m,mfa->fa", w, val), human_val).mean()  # noqa: E731
    assert score(weights[0]) == pytest.approx(max(score(w) for w in simplex_grid(2, 0.25)), abs=1e-12)
    assert chosen["val_mean_r"]["ensemble"] == pytest.approx(score(weights[0]), abs=1e-9)
    assert chosen["val_mean_r"]["ensemble"] >= max(chosen["val_mean_r"][m] for m in MEMBERS) - 1e-12
    combined = read_predictions(ensembled["results"] / "ensemble" / "predictions.csv", data.faces["id"], data.attributes)
    np.testing.assert_allclose(combined, np.einsum("am,mfa->fa", weights, everyone), rtol=1e-9)
    test = data.indices("test")
    metrics = json.loads((ensembled["results"] / "ensemble" / "metrics.json").read_text())
    expected = pearson_columns(combined[test], human[test])
    np.testing.assert_allclose([metrics["test"]["pearson"][a] for a in data.attributes], expected, atol=1e-5)


def test_the_ensemble_is_one_mlflow_model_that_predict_loads(ensembled) -> None:
    run = _stage_run(ensembled, "ensemble")
    assert run.data.params["ensemble.members"] == "['main', 'no_augment']"
    assert run.data.metrics["ensemble/test_pearson_mean"] == pytest.approx(
        json.loads((ensembled["results"] / "ensemble" / "metrics.json").read_text())["test"]["pearson_mean"], abs=1e-9
    )
    (output,) = run.outputs.model_outputs
    predictor = load_predictor(f"models:/{output.model_id}", ensembled["tracking"].uri)
    data = load_prepared(ensembled["prepared"])
    assert predictor.attributes == data.attributes and predictor.image_size == 32
    images = image_tensor(np.asarray(data.images[:5]))
    nets = [load_net(ensembled["models"] / "best.ckpt"), load_net(ensembled["variants"] / "no_augment" / "models" / "best.ckpt")]
    chosen = json.loads((ensembled["results"] / "ensemble" / "weights.json").read_text())
    weights = torch.tensor([[chosen["weights"][a][m] for m in MEMBERS] for a in data.attributes])
    with torch.no_grad():
        expected = sum(net(images) * weights[:, i] for i, net in enumerate(nets))
        np.testing.assert_allclose(predictor.model(images).numpy(), expected.numpy(), rtol=1e-4, atol=1e-5)
    version = ensembled["client"].get_model_version_by_alias(f"{ensembled['tracking'].experiment}-ensemble", "champion")
    assert version.source == f"models:/{output.model_id}"


def test_a_member_without_out_of_sample_val_predictions_is_named(ensembled, tmp_path, capsys) -> None:
    results = tmp_path / "results"
    for folder in ("train", "variants/no_augment"):
        (results / folder).mkdir(parents=True)
        for name in ("predictions.csv", "val_predictions.csv"):
            (results / folder / name).write_bytes((ensembled["results"] / folder / name).read_bytes())
    empty = pd.read_csv(results / "train" / "val_predictions.csv").iloc[:0]  # as a train+val fine-tune writes it
    empty.to_csv(results / "train" / "val_predictions.csv", index=False)
    out = results / "ensemble"
    paths = ["--results", str(results), "--variants", str(ensembled["variants"]), "--out", str(out)]
    assert stage("ensemble")([*stage_args(ensembled, "prepared", "models"), *paths]) == 1
    error = capsys.readouterr().err
    assert f"{results / 'train' / 'val_predictions.csv'}: no out-of-sample val predictions for ensemble member 'main'" in error
    assert "train.holdout_fit: true" in error and not (out / "weights.json").exists()


def test_without_members_the_folder_holds_the_note_alone(ensembled, tmp_path) -> None:
    """The folder is replaced whole: an earlier ensemble's scores do not stay beside the note that there is none."""
    out = tmp_path / "ensemble"
    shutil.copytree(ensembled["results"] / "ensemble", out)
    params = yaml.safe_load((ensembled["root"] / "params.yaml").read_text())
    params["ensemble"] = {"members": []}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    paths = ["--results", str(ensembled["results"]), "--variants", str(ensembled["variants"]), "--out", str(out)]
    args = ["--params", str(tmp_path / "params.yaml"), "--prepared", str(ensembled["prepared"]), "--models", str(ensembled["models"])]
    assert stage("ensemble")([*args, *paths]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["weights.json"]
    assert json.loads((out / "weights.json").read_text()) == {"members": []}
