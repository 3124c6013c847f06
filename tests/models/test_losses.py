import math

import pytest
import torch

from facetraits.models.losses import masked_pearson, MaskedRegressionLoss


def test_mse_ignores_missing_ratings() -> None:
    preds = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    target = torch.tensor([[1.5, float("nan")], [3.0, 5.0]])
    # observed squared errors: 0.25, 0, 1 -> mean over the 3 observed cells
    assert MaskedRegressionLoss("mse")(preds, target).item() == pytest.approx((0.25 + 0 + 1) / 3)


def test_missing_ratings_get_no_gradient() -> None:
    preds = torch.zeros(3, 2, requires_grad=True)
    target = torch.tensor([[1.0, float("nan")], [2.0, float("nan")], [3.0, 1.0]])
    for name in ("mse", "smooth_l1", "huber", "mse_pearson"):
        preds.grad = None
        MaskedRegressionLoss(name)(preds, target).backward()
        assert torch.isfinite(preds.grad).all()
        assert preds.grad[0, 1] == 0 and preds.grad[1, 1] == 0, name


def test_robust_losses_match_torch_on_complete_targets() -> None:
    preds, target = torch.randn(16, 3), torch.randn(16, 3) * 3
    assert MaskedRegressionLoss("huber", huber_delta=0.7)(preds, target) == pytest.approx(
        torch.nn.functional.huber_loss(preds, target, delta=0.7).item()
    )
    assert MaskedRegressionLoss("smooth_l1", huber_delta=0.7)(preds, target) == pytest.approx(
        torch.nn.functional.smooth_l1_loss(preds, target, beta=0.7).item()
    )


def test_pearson_term_adds_weighted_one_minus_r() -> None:
    target = torch.tensor([[1.0], [2.0], [3.0], [4.0]])
    preds = torch.tensor([[2.0], [1.0], [4.0], [3.0]])
    r = torch.corrcoef(torch.stack([preds[:, 0], target[:, 0]]))[0, 1].item()
    mse = torch.mean((preds - target) ** 2).item()
    assert MaskedRegressionLoss("mse_pearson", pearson_weight=0.3)(preds, target).item() == pytest.approx(mse + 0.3 * (1 - r))


def test_masked_pearson_equals_pearson_of_observed_pairs_and_zero_when_undefined() -> None:
    preds = torch.tensor([[1.0, 1.0], [2.0, 1.0], [0.0, 1.0], [5.0, 1.0]])
    target = torch.tensor([[2.0, 3.0], [1.0, 1.0], [7.0, 2.0], [3.0, 0.0]])
    observed = torch.tensor([[True, True], [True, True], [False, True], [True, True]])
    r = masked_pearson(preds, target, observed)
    expected = torch.corrcoef(torch.stack([torch.tensor([1.0, 2.0, 5.0]), torch.tensor([2.0, 1.0, 3.0])]))[0, 1]
    assert r[0].item() == pytest.approx(expected.item(), abs=1e-6)
    assert r[1].item() == 0.0 and not math.isnan(r[1].item())


def test_unknown_loss_is_named() -> None:
    with pytest.raises(ValueError, match="unknown loss 'l3'"):
        MaskedRegressionLoss("l3")
