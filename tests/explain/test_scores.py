"""Map scores against hand-computed values and a model with known dependence."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from facetraits.explain.maps import image_batch
from facetraits.explain.methods.base import baseline_images
from facetraits.explain.scores.faithfulness import perturbation_curves
from facetraits.explain.scores.ground_truth import mask_area_fraction, relevance_mass_accuracy, relevance_rank_accuracy
from facetraits.explain.scores.sanity import map_rank_correlation, randomized_copy
from tests.explain.conftest import mouth_only_net
from tests.explain.test_methods import vgg_net


def test_ground_truth_accuracies_by_hand() -> None:
    maps = np.array([[[4.0, 0.0], [1.0, 3.0]], [[0.0, 0.0], [0.0, 0.0]]])
    masks = np.array([[[True, False], [False, False]], [[True, True], [False, False]]])
    np.testing.assert_allclose(relevance_mass_accuracy(maps, masks), [0.5, np.nan])
    np.testing.assert_allclose(relevance_rank_accuracy(maps, masks)[0], 1.0)  # top-1 pixel (4.0) is the masked one
    np.testing.assert_allclose(relevance_rank_accuracy(maps[:1], ~masks[:1]), [2 / 3])  # top-3: 4, 3, 1 -> 2 unmasked
    np.testing.assert_allclose(mask_area_fraction(masks), [0.25, 0.5])


def test_negative_relevance_does_not_count_as_mass() -> None:
    maps = np.array([[[2.0, -5.0], [2.0, 0.0]]])
    inside = np.array([[[True, True], [False, False]]])
    np.testing.assert_allclose(relevance_mass_accuracy(maps, inside), [0.5])


def _curves(net, images, maps):
    references = baseline_images(images, "blur", 0.1)
    return perturbation_curves(net, images, maps, references, target=0, steps=8, batch_size=16)


def test_deleting_what_the_model_sees_first_ends_its_prediction_first(faces, mouth_region) -> None:
    net = mouth_only_net(mouth_region)
    images = image_batch(faces.images, range(8), torch.device("cpu"))
    seen_first = mouth_region.float().expand(8, -1, -1) + 0.01 * torch.rand(8, *mouth_region.shape)
    seen_last = 1.0 - seen_first
    good, bad = _curves(net, images, seen_first), _curves(net, images, seen_last)
    assert good.used == bad.used > 0
    np.testing.assert_allclose(good.deletion[:, 0][np.isfinite(good.deletion[:, 0])], 1.0)
    np.testing.assert_allclose(good.deletion[:, -1][np.isfinite(good.deletion[:, -1])], 0.0, atol=1e-9)
    np.testing.assert_allclose(good.insertion[:, -1][np.isfinite(good.insertion[:, -1])], 1.0)
    assert good.deletion_auc() < bad.deletion_auc() - 0.3
    assert good.insertion_auc() > bad.insertion_auc() + 0.3


def test_faces_whose_prediction_equals_their_reference_are_left_out(mouth_region) -> None:
    net = mouth_only_net(mouth_region)
    flat = torch.full((2, 3, *mouth_region.shape), 0.5)  # blurring a flat image changes nothing
    curves = _curves(net, flat, torch.rand(2, *mouth_region.shape))
    assert curves.used == 0 and np.isnan(curves.deletion_auc())


def test_randomized_copy_reinitializes_only_the_top(faces) -> None:
    net = vgg_net()
    clone = randomized_copy(net, top_blocks=1, seed=0)
    for position, (kept, new) in enumerate(zip(net.backbone.blocks, clone.backbone.blocks, strict=True)):
        same = all(torch.equal(a, b) for a, b in zip(kept.state_dict().values(), new.state_dict().values(), strict=True))
        assert same == (position < 4), position
    assert not torch.equal(net.heads.hidden_weight, clone.heads.hidden_weight)
    untouched = randomized_copy(net, top_blocks=0, seed=0)
    assert all(torch.equal(a, b) for a, b in zip(net.backbone.state_dict().values(), untouched.backbone.state_dict().values(), strict=True))
    assert torch.equal(randomized_copy(net, 1, seed=5).heads.out_weight, randomized_copy(net, 1, seed=5).heads.out_weight)


def test_rank_correlation_of_maps() -> None:
    rng = np.random.default_rng(0)
    maps = rng.random((3, 8, 8))
    np.testing.assert_allclose(map_rank_correlation(maps, maps * 7 + 1), 1.0)
    np.testing.assert_allclose(map_rank_correlation(maps, -maps), -1.0)
    assert abs(map_rank_correlation(maps, rng.random((3, 8, 8))).mean()) < 0.2
    assert np.isnan(map_rank_correlation(maps[:1], np.zeros((1, 8, 8)))[0])
