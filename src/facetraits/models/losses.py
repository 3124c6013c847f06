"""Regression losses over standardized targets in which missing ratings (NaN) count for nothing."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

LOSS_NAMES = ("mse", "smooth_l1", "huber", "mse_pearson")


def _masked_mean(elementwise: torch.Tensor, observed: torch.Tensor) -> torch.Tensor:
    return (elementwise * observed).sum() / observed.sum().clamp(min=1)


def masked_pearson(preds: torch.Tensor, target: torch.Tensor, observed: torch.Tensor) -> torch.Tensor:
    """Per-attribute Pearson r over the batch's observed ratings; 0 where it is undefined."""
    weight = observed.float()
    count = weight.sum(0).clamp(min=1)
    pred_centred = (preds - (preds * weight).sum(0) / count) * weight
    target_centred = (target - (target * weight).sum(0) / count) * weight
    covariance = (pred_centred * target_centred).sum(0)
    # clamp before sqrt: sqrt's gradient at 0 is infinite and would poison torch.where's other branch
    scale = (pred_centred.square().sum(0) * target_centred.square().sum(0)).clamp(min=1e-24).sqrt()
    return torch.where(scale > 1e-12, covariance / scale, torch.zeros_like(covariance))


class MaskedRegressionLoss(nn.Module):
    """loss(preds, target) with NaN targets masked out; `mse_pearson` adds weight * mean(1 - r) (the paper's loss)."""

    def __init__(self, name: str, huber_delta: float = 1.0, pearson_weight: float = 0.5) -> None:
        super().__init__()
        if name not in LOSS_NAMES:
            raise ValueError(f"train.loss: unknown loss '{name}'; known: {LOSS_NAMES}")
        self.name, self.huber_delta, self.pearson_weight = name, huber_delta, pearson_weight

    def forward(self, preds: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        observed = ~torch.isnan(target)
        filled = torch.where(observed, target, preds.detach())
        if self.name == "smooth_l1":
            elementwise = F.smooth_l1_loss(preds, filled, reduction="none", beta=self.huber_delta)
        elif self.name == "huber":
            elementwise = F.huber_loss(preds, filled, reduction="none", delta=self.huber_delta)
        else:
            elementwise = F.mse_loss(preds, filled, reduction="none")
        value = _masked_mean(elementwise, observed)
        if self.name == "mse_pearson":
            value = value + self.pearson_weight * (1 - masked_pearson(preds, filled, observed)).mean()
        return value
