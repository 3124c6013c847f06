"""The explain study end to end in the library: which faces, which scores, which files."""

from __future__ import annotations

import json

import numpy as np
import pytest

from facetraits.config import ExplainParams
from facetraits.errors import ConfigError
from facetraits.explain.outputs import write_explain_outputs
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
    assert len(set(gallery)) == 9 and len(chosen.mean) == 10 and len(chosen.scored) == 4
    assert set(chosen.scored) <= set(chosen.mean) and len(set(chosen.rows)) == len(chosen.rows)
    np.testing.assert_array_equal(chosen.predicted, predicted[chosen.rows - 100])
    again = select_faces(rows, predicted, params)
    np.testing.assert_array_equal(again.rows, chosen.rows)
    everything = select_faces(rows, predicted, ExplainParams(mean_faces=None))
    assert len(everything.mean) == 30


def test_gradcam_finds_the_mouth_of_a_mouth_only_model(faces, mouth_region) -> None:
    net = mouth_only_net(mouth_region)
    (result,) = explain_study(net, faces, ["happy"], PARAMS, show_progress=False)
    gradcam = result.methods[0].scores
    area = result.reference_scores["mask_area_fraction"]
    assert 0 < area < 0.1
    assert gradcam["mass_accuracy"] > 3 * area, "the mass accuracy of a map that can only see mouths"
    assert gradcam["rank_accuracy"] > 3 * area
    assert result.methods[0].maps.shape == (len(result.selection.rows), 48, 48)
    # maps of the re-initialized copy differ inside the window; the zeros outside it tie in both maps
    assert gradcam["randomization_rank_corr"] < 0.95
    assert gradcam["deletion_auc"] < result.reference_scores["random_deletion_auc"]


def test_the_randomization_check_fails_methods_whose_maps_do_not_change(faces, mouth_region) -> None:
    net = mouth_only_net(mouth_region)
    test_rows = faces.indices("test")
    selection = select_faces(test_rows, np.zeros(len(test_rows)), PARAMS)
    same_model = explain_attribute(net, net, faces, "happy", selection, PARAMS)
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
    outputs = write_explain_outputs(faces, explanations, out)
    assert not (out / "stale.txt").exists(), "the folder is replaced as a whole"
    scores = json.loads((out / "scores.json").read_text())
    assert scores == outputs.scores
    assert set(scores["attributes"]) == {"happy", "dominant"}
    assert set(scores["mean"]) == {"gradcam", "integrated_gradients"}
    happy_ig = scores["attributes"]["happy"]["integrated_gradients"]
    assert {"deletion_auc", "insertion_auc", "randomization_rank_corr", "mass_accuracy", "rank_accuracy", "maps_per_s"} <= set(happy_ig)
    expected_mean = np.mean([scores["attributes"][a]["gradcam"]["mass_accuracy"] for a in ("happy", "dominant")])
    assert scores["mean"]["gradcam"]["mass_accuracy"] == pytest.approx(expected_mean, abs=1e-6)
    assert outputs.flat_metrics["explain/happy/integrated_gradients/mass_accuracy"] == happy_ig["mass_accuracy"]
    for attribute in ("happy", "dominant"):
        table = (out / attribute / "faces.csv").read_text().splitlines()
        selection = next(e.selection for e in explanations if e.attribute == attribute)
        assert len(table) == len(selection.rows) + 1
        assert (out / attribute / "mean.png").stat().st_size > 1000
        for method in ("gradcam", "integrated_gradients"):
            maps = np.load(out / attribute / method / "maps.npy")
            assert maps.shape == (len(selection.rows), 48, 48) and maps.dtype == np.float32
            assert (out / attribute / method / "gallery.png").stat().st_size > 1000
    assert (out / "mean_heatmaps.png").is_file()
