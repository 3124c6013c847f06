"""Weights of an ensemble chosen on val: the grid, the choice, the combination, the network that carries them."""

from math import comb

import numpy as np
import pytest
import torch
from torch import nn

from facetraits.models.components.ensemble import WeightedEnsemble
from facetraits.models.ensemble import choose_weights, combine, simplex_grid


@pytest.mark.parametrize(("members", "step"), [(2, 0.05), (3, 0.1), (4, 0.25)])
def test_the_grid_is_every_weight_vector_of_steps_that_sums_to_one(members: int, step: float) -> None:
    grid = simplex_grid(members, step)
    units = round(1 / step)
    assert grid.shape == (comb(units + members - 1, members - 1), members)  # stars and bars
    np.testing.assert_allclose(grid.sum(axis=1), 1.0)
    assert (grid >= 0).all() and len(np.unique(grid, axis=0)) == len(grid)
    assert np.eye(members).tolist() == sorted(row for row in grid.tolist() if max(row) == 1.0)[::-1]  # each alone


def _members(rng: np.random.Generator, faces: int = 200, attributes: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Two members, each the truth plus its own noise: the truth is best recovered by a mix of both."""
    truth = rng.normal(size=(faces, attributes))
    return truth, np.stack([truth + rng.normal(scale=s, size=truth.shape) for s in (0.5, 1.0)])


def test_the_chosen_weights_recover_a_known_mix_and_beat_either_member_on_val() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(2, 300, 3))
    human = 0.3 * a + 0.7 * b  # exactly a 0.3 / 0.7 mix
    weights = choose_weights(np.stack([a, b]), human, 0.05, per_attribute=False)
    np.testing.assert_allclose(weights, [[0.3, 0.7]] * 3, atol=1e-9)
    truth, members = _members(rng)
    chosen = choose_weights(members, truth, 0.05, per_attribute=False)
    r = lambda p: np.mean([np.corrcoef(p[:, j], truth[:, j])[0, 1] for j in range(3)])  # noqa: E731
    assert r(combine(members, chosen)) > max(r(members[0]), r(members[1]))
    assert 0.5 < chosen[0, 0] < 1.0  # the less noisy member weighs more, the other still counts


def test_per_attribute_weights_follow_each_attribute_and_skip_unrated_faces() -> None:
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(2, 300, 2))
    human = np.stack([a[:, 0], 0.5 * a[:, 1] + 0.5 * b[:, 1]], axis=1)
    human[:40, 1] = np.nan  # unrated: left out of that attribute's r
    weights = choose_weights(np.stack([a, b]), human, 0.1, per_attribute=True)
    np.testing.assert_allclose(weights, [[1.0, 0.0], [0.5, 0.5]], atol=1e-9)
    shared = choose_weights(np.stack([a, b]), human, 0.1, per_attribute=False)
    assert (shared == shared[0]).all()


class _Constant(nn.Module):
    def __init__(self, value: float, attributes=("happy", "dominant"), image_size: int = 32) -> None:
        super().__init__()
        self.value, self.attributes, self.image_size = value, tuple(attributes), image_size

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return images.mean(dim=(1, 2, 3))[:, None] * self.value + torch.arange(len(self.attributes))


def test_the_ensemble_network_is_the_weighted_sum_of_its_members() -> None:
    members = [_Constant(1.0), _Constant(3.0)]
    weights = torch.tensor([[0.25, 0.75], [1.0, 0.0]])
    net = WeightedEnsemble(members, weights)
    images = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    expected = combine(np.stack([m(images).numpy() for m in members]), weights.numpy())
    np.testing.assert_allclose(net(images).numpy(), expected, rtol=1e-6)
    assert net.attributes == ("happy", "dominant") and net.image_size == 32


def test_members_that_rate_different_things_are_refused() -> None:
    with pytest.raises(ValueError, match="same attributes"):
        WeightedEnsemble([_Constant(1.0), _Constant(1.0, attributes=("happy",))], torch.ones(2, 2) / 2)
    with pytest.raises(ValueError, match="same attributes"):
        WeightedEnsemble([_Constant(1.0), _Constant(1.0, image_size=64)], torch.ones(2, 2) / 2)
    with pytest.raises(ValueError, match="weights must be"):
        WeightedEnsemble([_Constant(1.0), _Constant(1.0)], torch.ones(3, 2) / 2)
