"""The linear probe: closed-form ridge against scikit-learn, and the checkpoint it leaves."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from sklearn.linear_model import Ridge

from facetraits.errors import ConfigError
from facetraits.models.face_module import load_module
from facetraits.models.probe import fit_ridge_probe, refit_ridge_probe
from facetraits.models.inference import backbone_features
from facetraits.models.training import train_study
from tests.models.conftest import folder_bytes, tiny_params

ALPHAS = [0.1, 10.0, 1000.0]


def _features(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.normal(size=(n, 40)) * rng.uniform(0.1, 5, size=40) + rng.normal(size=40)


def test_ridge_equals_sklearn_ridge_on_standardized_features_with_unrated_faces() -> None:
    rng = np.random.default_rng(0)
    x, val = _features(rng, 50), _features(rng, 20)
    weights = np.zeros((40, 3))
    weights[:4] = rng.normal(size=(4, 3))
    y, val_y = x @ weights + rng.normal(size=(50, 3)), val @ weights + rng.normal(size=(20, 3))
    y[[3, 7], 1] = np.nan  # two unrated faces for one attribute
    probe = fit_ridge_probe(x, y, val, val_y, ALPHAS)
    standardized = (x - x.mean(axis=0)) / x.std(axis=0)
    val_standardized = (val - x.mean(axis=0)) / x.std(axis=0)
    for column in range(3):
        rows = ~np.isnan(y[:, column])
        per_alpha = [
            Ridge(alpha=alpha).fit(standardized[rows], y[rows, column]).predict(val_standardized) for alpha in ALPHAS
        ]
        scores = [np.corrcoef(p, val_y[:, column])[0, 1] for p in per_alpha]
        np.testing.assert_allclose(probe.val_pearson[column], scores, atol=1e-8)
        chosen = ALPHAS.index(probe.alpha[column])
        assert scores[chosen] == pytest.approx(max(scores), abs=1e-12)
        np.testing.assert_allclose(probe.predict(val)[:, column], per_alpha[chosen], rtol=1e-4, atol=1e-4)


def test_larger_penalty_wins_ties() -> None:
    rng = np.random.default_rng(1)
    x = _features(rng, 30)
    y = x[:, :1] + rng.normal(size=(30, 1))
    # validation ratings without variance: no penalty is better than another, so the largest is kept
    probe = fit_ridge_probe(x, y, x, np.ones((30, 1)), ALPHAS)
    assert probe.alpha[0] == max(ALPHAS) and (probe.val_pearson == 0).all()


def test_refit_keeps_each_attributes_penalty_and_equals_sklearn_ridge_on_all_faces_given() -> None:
    rng = np.random.default_rng(2)
    x, val = _features(rng, 50), _features(rng, 20)
    weights = rng.normal(size=(40, 3)) * (rng.uniform(size=(40, 3)) < 0.2)
    y, val_y = x @ weights + rng.normal(size=(50, 3)), val @ weights + rng.normal(size=(20, 3))
    probe = fit_ridge_probe(x, y, val, val_y, ALPHAS)
    both, both_y = np.vstack([x, val]), np.vstack([y, val_y])
    both_y[[1, 60], 2] = np.nan  # unrated faces, one from each split
    refitted = refit_ridge_probe(probe, both, both_y)
    np.testing.assert_array_equal(refitted.alpha, probe.alpha)
    np.testing.assert_array_equal(refitted.val_pearson, probe.val_pearson)
    standardized = (both - both.mean(axis=0)) / both.std(axis=0)
    test = _features(rng, 15)
    for column in range(3):
        rows = ~np.isnan(both_y[:, column])
        expected = Ridge(alpha=probe.alpha[column]).fit(standardized[rows], both_y[rows, column])
        predicted = expected.predict((test - both.mean(axis=0)) / both.std(axis=0))
        np.testing.assert_allclose(refitted.predict(test)[:, column], predicted, rtol=1e-4, atol=1e-4)
    assert not np.allclose(refitted.weight, probe.weight)


@pytest.mark.slow
def test_probe_checkpoint_is_an_ordinary_model_whose_forward_is_the_ridge_fit(tiny_data, tmp_path) -> None:
    params = tiny_params(
        model={"backbone": "mobilenet_v2", "pool": "avgmax", "hflip_average": True},
        train={"protocol": "probe", "ridge_alphas": ALPHAS},
    )
    (fit,) = train_study(tiny_data, params.model, params.train, tmp_path)
    assert fit.best_checkpoint == tmp_path / "best.ckpt" and set(fit.test) >= {"test/pearson_mean", "test/loss"}
    assert list(fit.history["epoch"]) == [0.0] and "val/pearson_mean" in fit.history
    details = json.loads((tmp_path / "probe.json").read_text())
    assert set(details["alpha"]) == set(tiny_data.attributes) and details["features"] == 2560
    module = load_module(fit.best_checkpoint)
    assert module.hparams.model["head"] == "linear" and module.hparams.model["trainable_blocks"] == 0
    net = module.net
    features = backbone_features(net, tiny_data.images)
    rows = {split: tiny_data.indices(split) for split in ("train", "val")}
    targets = tiny_data.faces[list(tiny_data.attributes)].to_numpy(np.float64)
    z = (targets - net.target_mean.numpy()) / net.target_std.numpy()
    probe = fit_ridge_probe(features[rows["train"]], z[rows["train"]], features[rows["val"]], z[rows["val"]], ALPHAS)
    assert list(probe.alpha) == [details["alpha"][a] for a in tiny_data.attributes]
    images = torch.from_numpy(np.array(tiny_data.images[:6])).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():
        np.testing.assert_allclose(net.standardized(images).numpy(), probe.predict(features[:6]), rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_probe_fitted_on_train_and_val_refits_the_val_chosen_penalties_and_reports_no_val_score(tiny_data, tmp_path) -> None:
    params = tiny_params(
        model={"backbone": "mobilenet_v2", "pool": "avgmax"},
        train={"protocol": "probe", "ridge_alphas": ALPHAS, "fit_on": "train+val"},
    )
    (fit,) = train_study(tiny_data, params.model, params.train, tmp_path)
    assert "val/pearson_mean" not in fit.history and "test/pearson_mean" in fit.test
    net = load_module(fit.best_checkpoint).net
    features = backbone_features(net, tiny_data.images)
    train_rows, val_rows = tiny_data.indices("train"), tiny_data.indices("val")
    both = np.sort(np.concatenate([train_rows, val_rows]))
    targets = tiny_data.faces[list(tiny_data.attributes)].to_numpy(np.float64)
    np.testing.assert_allclose(net.target_mean.numpy(), targets[both].mean(axis=0), rtol=1e-5)
    z = (targets - net.target_mean.numpy()) / net.target_std.numpy()
    chosen = fit_ridge_probe(features[train_rows], z[train_rows], features[val_rows], z[val_rows], ALPHAS)
    expected = refit_ridge_probe(chosen, features[both], z[both])
    np.testing.assert_allclose(net.heads.linear.weight.detach().numpy(), expected.weight, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_the_same_probe_in_two_folders_writes_the_same_bytes(tiny_data, tmp_path) -> None:
    params = tiny_params(model={"backbone": "mobilenet_v2"}, train={"protocol": "probe", "ridge_alphas": ALPHAS})
    first, second = tmp_path / "a" / "models", tmp_path / "elsewhere" / "models"
    for folder in (first, second):
        train_study(tiny_data, params.model, params.train, folder)
    written = folder_bytes(first)
    assert set(written) == {"best.ckpt", "probe.json"} and written == folder_bytes(second)
    assert not any("seconds" in key for key in json.loads(written["probe.json"]))  # timings go to MLflow only


def test_fused_blocks_keep_the_weighting_with_the_best_mean_val_r_and_equal_sklearn_ridge_on_weighted_blocks() -> None:
    rng = np.random.default_rng(3)
    x, val = _features(rng, 60), _features(rng, 30)
    widths, grid = [25, 15], [0.25, 4.0]
    weights = np.zeros((40, 2))
    weights[30:34] = rng.normal(size=(4, 2)) * 3  # the signal lies in the second block
    y, val_y = x @ weights + rng.normal(size=(60, 2)), val @ weights + rng.normal(size=(30, 2))
    probe = fit_ridge_probe(x, y, val, val_y, ALPHAS, widths, grid)
    mean, scale = x.mean(axis=0), x.std(axis=0)
    best_scores = {}
    for factor in grid:
        columns = np.repeat([1.0, factor], widths)
        z, val_z = (x - mean) / scale * columns, (val - mean) / scale * columns
        fits = [[Ridge(alpha=a).fit(z, y[:, c]).predict(val_z) for a in ALPHAS] for c in range(2)]
        scores = np.array([[np.corrcoef(p, val_y[:, c])[0, 1] for p in fits[c]] for c in range(2)])
        best_scores[factor] = scores.max(axis=1).mean()
        if factor == probe.block_weights[1]:
            np.testing.assert_allclose(probe.val_pearson, scores, atol=1e-8)
            chosen = [fits[c][ALPHAS.index(probe.alpha[c])] for c in range(2)]
            np.testing.assert_allclose(probe.predict(val), np.stack(chosen, axis=1), rtol=1e-4, atol=1e-4)
    assert probe.block_weights == (1.0, max(best_scores, key=best_scores.get))
    assert best_scores[4.0] > best_scores[0.25]  # the weighting that favours the informative block wins


def test_one_block_is_fitted_exactly_as_without_blocks_and_a_refit_keeps_the_block_weights() -> None:
    rng = np.random.default_rng(4)
    x, val = _features(rng, 50), _features(rng, 20)
    y, val_y = x[:, :3] + rng.normal(size=(50, 3)), val[:, :3] + rng.normal(size=(20, 3))
    plain = fit_ridge_probe(x, y, val, val_y, ALPHAS)
    one_block = fit_ridge_probe(x, y, val, val_y, ALPHAS, [40], [0.5, 2.0])
    np.testing.assert_array_equal(plain.weight, one_block.weight)
    np.testing.assert_array_equal(plain.bias, one_block.bias)
    assert one_block.block_weights == (1.0,)
    fused = fit_ridge_probe(x, y, val, val_y, ALPHAS, [30, 10], [0.5, 2.0])
    both, both_y = np.vstack([x, val]), np.vstack([y, val_y])
    refitted = refit_ridge_probe(fused, both, both_y, [30, 10])
    assert refitted.block_weights == fused.block_weights
    columns = np.repeat(fused.block_weights, [30, 10])
    z = (both - both.mean(axis=0)) / both.std(axis=0) * columns
    for column in range(3):
        expected = Ridge(alpha=fused.alpha[column]).fit(z, both_y[:, column]).predict(z)
        np.testing.assert_allclose(refitted.predict(both)[:, column], expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    ("blocks", "message"),
    [
        (["face_embedding", "backbone"], "must start with 'backbone'"),
        (["backbone", "face_landmarks", "face_landmarks"], "name each block once"),
        (["backbone", "face_mesh"], "face_mesh"),
    ],
)
def test_probe_blocks_are_checked_when_params_are_read(blocks, message) -> None:
    with pytest.raises(ConfigError, match=message) as raised:
        tiny_params(train={"protocol": "probe", "probe_blocks": blocks})
    assert "train.probe_blocks" in str(raised.value)
