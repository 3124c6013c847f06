"""The explain study end to end in the library: which faces, which scores, which files."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest
import torch

from facetraits.config import ExplainParams
from facetraits.errors import ConfigError
from facetraits.explain.maps import image_batch
from facetraits.explain.methods import build_method
from facetraits.explain.outputs import write_explain_outputs
from facetraits.explain.scores.ground_truth import relevance_mass_accuracy, relevance_rank_accuracy
from facetraits.explain.study import explain_attribute, explain_study, select_faces
from tests.explain.conftest import mouth_only_net

PARAMS = ExplainParams(
    methods=["gradcam", "integrated_gradients"], gradcam_block=1, ig_steps=4, gallery_faces=2, mean_faces=8,
    score_faces=4, curve_steps=4, batch_size=8,
)  # fmt: skip


def test_face_selection_takes_extremes_and_a_seeded_sample() -> None:
    rows = np.arange(100, 130)
    predicted = np.random.default_rng(0).normal(size=30)
    params = ExplainParams(gallery_faces=3, mean_faces=10, score_faces=4, seed=1)
    chosen = select_faces(rows, predicted, params)
    gallery = chosen.rows[chosen.gallery]
    assert chosen.gallery_roles == ("highest",) * 3 + ("lowest",) * 3 + ("random",) * 3
    assert set(gallery[:3]) == set(rows[np.argsort(predicted)[-3:]])
    assert set(gallery[3:6]) == set(rows[np.argsort(predicted)[:3]])
    assert len(set(gallery)) == 9 and len(chosen.mean_rows) == 10 and len(chosen.scored) == 4
    assert set(chosen.rows[chosen.scored]) <= set(chosen.mean_rows) and len(set(chosen.rows)) == len(chosen.rows)
    np.testing.assert_array_equal(chosen.rows, np.union1d(gallery, chosen.rows[chosen.scored]))  # maps kept: no more
    np.testing.assert_array_equal(chosen.mapped, np.union1d(chosen.rows, chosen.mean_rows))
    np.testing.assert_array_equal(chosen.predicted, predicted[chosen.rows - 100])
    again = select_faces(rows, predicted, params)
    np.testing.assert_array_equal(again.rows, chosen.rows)
    other_attribute = select_faces(rows, -predicted, params)
    np.testing.assert_array_equal(other_attribute.mean_rows, chosen.mean_rows)  # every attribute: the same faces
    np.testing.assert_array_equal(other_attribute.rows[other_attribute.scored], chosen.rows[chosen.scored])
    everything = select_faces(rows, predicted, ExplainParams(mean_faces=None))
    np.testing.assert_array_equal(everything.mean_rows, rows)


def test_gradcam_finds_the_mouth_of_a_mouth_only_model(faces, mouth_region) -> None:
    net = mouth_only_net(mouth_region)
    (result,) = explain_study(net, faces, ["happy"], PARAMS, show_progress=False)
    gradcam = result.methods[0].scores
    area = result.reference_scores["mask_area_fraction"]
    assert 0 < area < 0.1
    assert gradcam["mass_accuracy"] > 3 * area, "the mass accuracy of a map that can only see mouths"
    assert gradcam["rank_accuracy"] > 3 * area
    assert result.methods[0].maps.shape == (len(result.selection.rows), 48, 48)
    # maps of the re-initialized copy differ inside the window; the zeros outside it are left out of the ranks
    assert gradcam["randomization_rank_corr"] < PARAMS.sanity_threshold
    assert gradcam["randomization_passed"] == 1.0
    assert gradcam["deletion_auc"] < result.reference_scores["random_deletion_auc"]


def test_gradcam_at_the_default_block_finds_the_mouth(faces, mouth_region) -> None:
    params = ExplainParams(methods=["gradcam"], gallery_faces=1, mean_faces=None, score_faces=2, curve_steps=4)
    assert params.gradcam_block == 5
    (result,) = explain_study(mouth_only_net(mouth_region, blocks=5), faces, ["happy"], params, show_progress=False)
    area = result.reference_scores["mask_area_fraction"]
    assert result.methods[0].scores["mass_accuracy"] > 3 * area, "a 3x3 block-5 map still lands on the mouth"


def test_mean_map_and_ground_truth_scores_equal_a_direct_computation(faces, mouth_region) -> None:
    """Streamed over the whole test split in batches of 4; the reference maps every test face in one call."""
    net = mouth_only_net(mouth_region)
    params = ExplainParams(
        methods=["gradcam", "gradient_shap"], gradcam_block=1, shap_samples=2, gallery_faces=2, mean_faces=None,
        score_faces=2, curve_steps=4, batch_size=4,
    )  # fmt: skip
    (result,) = explain_study(net, faces, ["happy"], params, show_progress=False)
    test_rows = faces.indices("test")
    np.testing.assert_array_equal(result.selection.mean_rows, test_rows)
    masks = faces.relevance_masks("happy")(test_rows)
    images = image_batch(faces.images, test_rows, torch.device("cpu"))
    for method in result.methods:
        direct = build_method(method.method, net, params).maps(images, 0, test_rows.tolist()).numpy()
        unit = direct / direct.reshape(len(direct), -1).sum(axis=1)[:, None, None]
        np.testing.assert_allclose(method.mean_map, unit.mean(axis=0), rtol=1e-4, atol=1e-9)
        for score, by_face in (("mass_accuracy", relevance_mass_accuracy), ("rank_accuracy", relevance_rank_accuracy)):
            np.testing.assert_allclose(method.scores[score], by_face(direct, masks).mean(), rtol=1e-5)
        kept = np.searchsorted(test_rows, result.selection.rows)
        np.testing.assert_allclose(method.maps, direct[kept], rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(result.reference_scores["mask_area_fraction"], masks.mean())


def test_maps_and_scores_repeat_exactly_and_do_not_depend_on_the_batch(faces, mouth_region) -> None:
    """GradientSHAP and SmoothGrad sample, deletion / insertion break ties at random: all from explain.seed."""
    net = mouth_only_net(mouth_region)
    params = ExplainParams(
        methods=["gradient_shap", "smoothgrad", "gradcam"], gradcam_block=1, shap_samples=3, noise_samples=3,
        gallery_faces=2, mean_faces=10, score_faces=3, curve_steps=4, batch_size=2,
    )  # fmt: skip
    first = explain_study(net, faces, ["happy"], params, show_progress=False)[0]
    torch.manual_seed(1234)  # the global generators play no part
    np.random.seed(1234)
    again = explain_study(net, faces, ["happy"], params, show_progress=False)[0]
    larger = explain_study(net, faces, ["happy"], dataclasses.replace(params, batch_size=16), show_progress=False)[0]
    for one, other, big in zip(first.methods, again.methods, larger.methods, strict=True):
        np.testing.assert_array_equal(one.maps, other.maps)
        np.testing.assert_array_equal(one.mean_map, other.mean_map)
        assert one.scores == other.scores
        np.testing.assert_allclose(big.maps, one.maps, rtol=1e-4, atol=1e-6 * one.maps.max())
        np.testing.assert_allclose(big.mean_map, one.mean_map, rtol=1e-4, atol=1e-9)
        assert big.scores == pytest.approx(one.scores, rel=1e-4, abs=1e-4, nan_ok=True)  # ranks of near-ties move
    other_seed = explain_study(net, faces, ["happy"], dataclasses.replace(params, seed=7), show_progress=False)[0]
    assert not np.array_equal(other_seed.methods[0].maps, first.methods[0].maps), "the seed drives the samples"


def test_the_randomization_check_fails_methods_whose_maps_do_not_change(faces, mouth_region) -> None:
    net = mouth_only_net(mouth_region)
    test_rows = faces.indices("test")
    selection = select_faces(test_rows, np.zeros(len(test_rows)), PARAMS)
    same_model = explain_attribute(net, net, faces, "happy", selection, PARAMS, random_order={})
    for result in same_model.methods:
        assert result.scores["randomization_rank_corr"] == pytest.approx(1.0)
        assert result.scores["randomization_passed"] == 0.0


def test_unknown_attribute_is_refused(faces, mouth_region) -> None:
    with pytest.raises(ConfigError, match=r"explain.attributes: \['dominant'\] not predicted"):
        explain_study(mouth_only_net(mouth_region), faces, ["dominant"], PARAMS, show_progress=False)


def test_outputs_hold_galleries_raw_maps_mean_maps_and_scores(faces, mouth_region, tmp_path) -> None:
    net = mouth_only_net(mouth_region, attributes=("happy", "dominant"))
    explanations = explain_study(net, faces, ["happy", "dominant"], PARAMS, show_progress=False)
    out = tmp_path / "explain"
    (out / "stale.txt").parent.mkdir()
    (out / "stale.txt").write_text("from an earlier run")
    outputs = write_explain_outputs(faces, explanations, out, PARAMS)
    assert not (out / "stale.txt").exists(), "the folder is replaced as a whole"
    scores = json.loads((out / "scores.json").read_text())
    assert scores == outputs.scores
    assert set(scores["attributes"]) == {"happy", "dominant"}
    assert set(scores["mean"]) == {"gradcam", "integrated_gradients"}
    happy_ig = scores["attributes"]["happy"]["integrated_gradients"]
    assert {"deletion_auc", "insertion_auc", "randomization_rank_corr", "mass_accuracy", "rank_accuracy"} <= set(
        happy_ig
    )
    assert "maps_per_s" not in json.dumps(scores), "a timing in the DVC metrics would differ on every run"
    assert outputs.flat_metrics["explain/integrated_gradients/maps_per_s"] > 0
    assert outputs.flat_metrics["explain/gradcam/maps_per_s"] == pytest.approx(outputs.maps_per_s["gradcam"])
    expected_mean = np.mean([scores["attributes"][a]["gradcam"]["mass_accuracy"] for a in ("happy", "dominant")])
    assert scores["mean"]["gradcam"]["mass_accuracy"] == pytest.approx(expected_mean, abs=1e-6)
    assert outputs.flat_metrics["explain/integrated_gradients/mass_accuracy"] == scores["mean"]["integrated_gradients"]["mass_accuracy"]
    assert len(outputs.flat_metrics) == 2 * (len(scores["mean"]["gradcam"]) + 1), "means and a rate per method, no more"
    for explanation in explanations:
        attribute, selection = explanation.attribute, explanation.selection
        table = pd.read_csv(out / attribute / "faces.csv")
        np.testing.assert_array_equal(table["row"], selection.rows)
        np.testing.assert_array_equal(table["map_index"], np.arange(len(selection.rows)))
        np.testing.assert_array_equal(table["in_mean"], np.isin(selection.rows, selection.mean_rows))
        assert table["scored"].sum() == PARAMS.score_faces and (table["gallery"].notna()).sum() == 6
        assert (out / attribute / "mean.png").stat().st_size > 1000
        for result in explanation.methods:
            maps = np.load(out / attribute / result.method / "maps.npy")
            assert maps.shape == (len(selection.rows), 48, 48) and maps.dtype == np.float32
            np.testing.assert_array_equal(maps, result.maps)
            assert (out / attribute / result.method / "gallery.png").stat().st_size > 1000
    assert (out / "mean_heatmaps.png").is_file()
