"""Map scores against hand-computed values and a model with known dependence."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from scipy.stats import bootstrap, wilcoxon

from facetraits.explain.maps import image_batch
from facetraits.explain.methods.base import baseline_images
from facetraits.explain.scores.faithfulness import _step_masks, perturbation_curves
from facetraits.explain.scores.ground_truth import mask_area_fraction, relevance_mass_accuracy, relevance_rank_accuracy
from facetraits.explain.scores.sanity import map_rank_correlation, maps_changed, randomized_copy
from facetraits.explain.scores.spread import mean_interval, randomization_p
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
    keys = range(len(images))
    return perturbation_curves(net, images, maps, references, [0], steps=8, batch_size=16, keys=keys, seed=0)[0]


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


def _rank_accuracy_over_tie_breaks(relevance: np.ndarray, mask: np.ndarray) -> float:
    """Reference: the stable-sort rank accuracy averaged over every order of the pixels (every tie-break)."""
    flat, inside, size = relevance.ravel(), mask.ravel(), int(mask.sum())
    accuracies = []
    for order in itertools.permutations(range(flat.size)):
        permuted = np.asarray(order)
        top = permuted[np.argsort(-flat[permuted], kind="stable")][:size]
        accuracies.append(inside[top].mean())
    return float(np.mean(accuracies))


def test_rank_accuracy_shares_tied_slots_as_random_tie_breaking_would() -> None:
    plateau = np.array([[[5.0, 1.0, 1.0], [1.0, 0.0, 0.0]]])  # K = 3: the 5, then 2 of the three tied 1s
    mask = np.array([[[True, False, True], [False, False, True]]])
    np.testing.assert_allclose(relevance_rank_accuracy(plateau, mask), [(1 + 2 * (1 / 3)) / 3])
    np.testing.assert_allclose(relevance_rank_accuracy(plateau, mask), [_rank_accuracy_over_tie_breaks(plateau, mask)])
    zeros = np.array([[[0.0, 0.0, 0.0], [0.0, 0.0, 3.0]]])  # a ReLU'd map: one hot pixel on a zero plateau
    top_left = np.array([[[True, False, False], [False, False, True]]])
    expected = _rank_accuracy_over_tie_breaks(zeros, top_left)
    np.testing.assert_allclose(expected, (1 + 1 / 5) / 2)
    np.testing.assert_allclose(relevance_rank_accuracy(zeros, top_left), [expected])  # a stable sort says 1.0
    assert np.isnan(relevance_rank_accuracy(np.full((1, 2, 3), 0.7), mask)[0]), "a constant map ranks nothing"


def test_deletion_order_breaks_ties_at_random_from_the_seed() -> None:
    maps = torch.zeros(2, 16, 16)
    maps[:, 15, 15] = 1.0  # one relevant pixel in the bottom-right corner, the rest tied
    masks = _step_masks(maps, steps=4, keys=[3, 4], seed=0)
    assert masks[:, 1, 255].all(), "strictly higher relevance always goes first"
    first_quarter = masks[:, 1].view(2, 16, 16)
    rows = first_quarter.nonzero()[:, 1].double()
    assert 4 < rows.mean() < 11, "tied pixels are not taken top rows first"
    assert not torch.equal(first_quarter[0], first_quarter[1]), "each face draws its own order"
    assert torch.equal(masks, _step_masks(maps, steps=4, keys=[3, 4], seed=0))
    assert torch.equal(masks[1:], _step_masks(maps[1:], steps=4, keys=[4], seed=0)), "per face, not per batch"
    assert not torch.equal(masks, _step_masks(maps, steps=4, keys=[3, 4], seed=1))


def test_perturbed_images_go_through_the_model_batch_size_at_a_time(faces, mouth_region) -> None:
    net = mouth_only_net(mouth_region)
    images = image_batch(faces.images, range(3), torch.device("cpu"))
    maps = torch.rand(3, *mouth_region.shape, generator=torch.Generator().manual_seed(0))
    whole = _curves(net, images, maps)  # batch_size 16: more than all 3 x 9 perturbed images of each curve
    seen: list[int] = []
    hook = net.backbone.register_forward_pre_hook(lambda module, args: seen.append(len(args[0])))
    batched = perturbation_curves(
        net, images, maps, baseline_images(images, "blur", 0.1), [0], steps=8, batch_size=5, keys=range(3), seed=0
    )[0]
    hook.remove()
    assert max(seen) == 5
    assert sum(seen) == 3 * (2 + 7 + 7), "3 faces: 2 ends, 7 inner steps each of deletion and insertion"
    np.testing.assert_allclose(batched.deletion, whole.deletion, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(batched.insertion, whole.insertion, rtol=1e-5, atol=1e-6)


def test_bf16_curves_are_the_fp32_ones_within_rounding(faces, mouth_region) -> None:
    """A bf16 study draws its curves in bf16 (as it tests): the same curves up to bf16 rounding of the outputs."""
    net = mouth_only_net(mouth_region)
    images = image_batch(faces.images, range(3), torch.device("cpu"))
    maps = torch.rand(3, *mouth_region.shape, generator=torch.Generator().manual_seed(0))
    references = baseline_images(images, "blur", 0.1)
    exact = perturbation_curves(net, images, maps, references, [0], 8, 16, range(3), 0)[0]
    rounded = perturbation_curves(net, images, maps, references, [0], 8, 16, range(3), 0, precision="bf16-mixed")[0]
    assert not np.array_equal(exact.deletion, rounded.deletion, equal_nan=True)
    np.testing.assert_allclose(rounded.deletion, exact.deletion, atol=0.05)
    np.testing.assert_allclose(rounded.insertion, exact.insertion, atol=0.05)


def test_one_set_of_passes_scores_every_target_as_separate_runs_would(faces, mouth_region) -> None:
    net = mouth_only_net(mouth_region, attributes=("happy", "dominant"))
    images = image_batch(faces.images, range(4), torch.device("cpu"))
    maps = torch.rand(4, *mouth_region.shape, generator=torch.Generator().manual_seed(1))
    references = baseline_images(images, "blur", 0.1)
    both = perturbation_curves(net, images, maps, references, [0, 1], steps=6, batch_size=8, keys=range(4), seed=0)
    for target, curves in enumerate(both):
        (alone,) = perturbation_curves(net, images, maps, references, [target], 6, 8, range(4), 0)
        np.testing.assert_array_equal(curves.deletion, alone.deletion)
        np.testing.assert_array_equal(curves.insertion, alone.insertion)
    assert not np.allclose(both[0].deletion, both[1].deletion, equal_nan=True), "each target reads its own output"
    # insertion's ends, taken from deletion, are what predicting them would give: the reference and the face
    with torch.no_grad():
        face, reference = net.standardized(images)[:, 0].double(), net.standardized(references)[:, 0].double()
    gap = (face - reference).numpy()
    usable = np.abs(gap) >= 0.05
    np.testing.assert_allclose(both[0].insertion[usable, 0], 0.0, atol=1e-9)
    np.testing.assert_allclose(both[0].insertion[usable, -1], 1.0, atol=1e-6)


def test_rank_correlation_ignores_pixels_zero_in_both_maps() -> None:
    rng = np.random.default_rng(1)
    trained = np.zeros((2, 16, 16))
    trained[:, 6:10, 6:10] = rng.random((2, 4, 4)) + 0.1  # a window on an empty background
    reversed_inside = np.where(trained > 0, 2.0 - trained, 0.0)  # inside the window, the opposite ranking
    np.testing.assert_allclose(map_rank_correlation(trained, reversed_inside), -1.0)
    np.testing.assert_allclose(maps_changed(trained, reversed_inside, 0.5), 1.0)
    np.testing.assert_allclose(maps_changed(trained, trained * 3, 0.5), 0.0)


def test_a_randomized_map_flattened_to_zero_counts_as_changed() -> None:
    trained = np.random.default_rng(2).random((3, 8, 8))
    trained[2] = 0.0  # a trained map that ranks nothing: undefined
    randomized = np.zeros_like(trained)
    assert np.isnan(map_rank_correlation(trained, randomized)).all()
    np.testing.assert_array_equal(maps_changed(trained, randomized, 0.5), [1.0, 1.0, np.nan])


def test_mean_interval_of_one_group_is_the_percentile_bootstrap_of_its_mean() -> None:
    values = np.random.default_rng(0).normal(0.4, 0.1, size=50)
    reference = bootstrap((values,), np.mean, n_resamples=20000, method="percentile", random_state=1)
    low, high = mean_interval([values], confidence=0.95, resamples=20000, seed=2)
    ci = reference.confidence_interval
    assert low == pytest.approx(ci.low, abs=0.005) and high == pytest.approx(ci.high, abs=0.005)
    assert low < values.mean() < high


def test_mean_interval_resamples_each_attribute_on_its_own_faces() -> None:
    """The mean of two attributes' means, one of them constant: the interval is half as wide as the other's
    alone (the mean's spread halves); NaN faces are left out, and no defined face gives no interval."""
    varying = np.random.default_rng(3).normal(0.0, 1.0, size=40)
    alone = np.subtract(*mean_interval([varying], 0.95, 20000, 4)[::-1])
    constant = np.array([0.7] * 40 + [np.nan])
    both = np.subtract(*mean_interval([varying, constant], 0.95, 20000, 4)[::-1])
    assert both == pytest.approx(alone / 2, rel=0.05)
    assert all(np.isnan(mean_interval([np.array([np.nan])], 0.95, 100, 0)))


def test_randomization_p_tests_the_correlations_against_the_threshold() -> None:
    below = np.array([0.1, 0.2, -0.1, 0.05, 0.3, 0.0, 0.15, 0.25, 0.12, np.nan])
    assert randomization_p(below, 0.5) == pytest.approx(wilcoxon(below[:-1] - 0.5, alternative="less").pvalue)
    assert randomization_p(below, 0.5) < 0.01
    assert randomization_p(below + 0.6, 0.5) > 0.9  # maps that survive randomization: no evidence they changed
    assert np.isnan(randomization_p(np.array([0.1]), 0.5))
