"""LightningModule: multi-attribute regression on a shared backbone."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import lightning as L
import torch

from facetraits.config import TrainParams
from facetraits.errors import ConfigError
from facetraits.models.inference import build_net, read_checkpoint
from facetraits.models.losses import MaskedRegressionLoss
from facetraits.models.metrics import AttributeMetrics

MONITOR = "val/pearson_mean"


@dataclass(frozen=True)
class OptimSettings:
    """What the module trains with, as typed fields; checkpoints keep them as a plain dict (weights_only loading),
    and warmup_share is absent from checkpoints older than it."""

    loss: str
    huber_delta: float
    pearson_weight: float
    optimizer: str
    lr: float
    backbone_lr_scale: float
    weight_decay: float
    momentum: float
    scheduler: str
    max_epochs: int
    warmup_share: float = 0.3

    @classmethod
    def of(cls, train: TrainParams) -> OptimSettings:
        return cls(**{field.name: getattr(train, field.name) for field in fields(cls)})


class FaceTraitsModule(L.LightningModule):
    """Hyperparameters are plain dicts and lists, so checkpoints load with `weights_only=True`.

    model: backbone, weights, trainable_blocks, head, head_hidden, dropout, pool, hflip_average (the last two
    absent from checkpoints older than them: avg, False).
    optim: loss, huber_delta, pearson_weight, optimizer, lr, backbone_lr_scale, weight_decay, momentum,
    scheduler, max_epochs, warmup_share (onecycle; absent from older checkpoints).
    inputs: "images", or "features" when batches hold cached frozen-backbone features (sweep trials
    that train the heads only).
    """

    def __init__(
        self,
        attributes: Sequence[str],
        target_mean: Sequence[float],
        target_std: Sequence[float],
        image_size: int,
        model: dict[str, Any],
        optim: dict[str, Any],
        inputs: str = "images",
    ) -> None:
        super().__init__()
        self.save_hyperparameters(logger=False)
        self.attributes = list(attributes)
        self.net = build_net(attributes, target_mean, target_std, image_size, model)
        self.optim = OptimSettings(**optim)
        self.loss = MaskedRegressionLoss(self.optim.loss, self.optim.huber_delta, self.optim.pearson_weight)
        self.val_metrics = AttributeMetrics(attributes)
        self.test_metrics = AttributeMetrics(attributes)
        # a fused probe's face blocks of every prepared face, by row (the face_features stage's): the val and test
        # loops read them instead of running dlib; not part of the checkpoint, which computes them from pixels
        self.cached_face_features: torch.Tensor | None = None

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images)

    def _standardized_predictions(self, inputs: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        if self.hparams.inputs == "features":
            return self.net.heads(inputs)
        cached = self.cached_face_features
        return self.net.standardized(inputs, None if cached is None else cached[index.cpu()].to(inputs.device))

    def _standardize(self, targets: torch.Tensor) -> torch.Tensor:
        return (targets - self.net.target_mean) / self.net.target_std

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        images, targets, index = batch
        loss = self.loss(self._standardized_predictions(images, index), self._standardize(targets))
        self.log("train/loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=len(images), sync_dist=True)
        return loss

    def _evaluate(self, batch: tuple[torch.Tensor, ...], split: str, metrics: AttributeMetrics) -> None:
        images, targets, index = batch
        standardized = self._standardized_predictions(images, index)
        loss = self.loss(standardized, self._standardize(targets))
        self.log(f"{split}/loss", loss, on_step=False, on_epoch=True, batch_size=len(images), sync_dist=True)
        metrics.update(standardized * self.net.target_std + self.net.target_mean, targets, index)

    def _log_metrics(self, split: str, metrics: AttributeMetrics) -> None:
        values = metrics.compute()
        values.pop("count")
        # compute() already gathered every rank's samples, so ranks agree; syncing averages equal values
        self.log(f"{split}/pearson_mean", values.pop("pearson_mean"), prog_bar=True, sync_dist=True)
        self.log_dict({f"{split}/{k}": v for k, v in values.items()}, sync_dist=True)
        metrics.reset()

    def validation_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> None:
        self._evaluate(batch, "val", self.val_metrics)

    def on_validation_epoch_end(self) -> None:
        self._log_metrics("val", self.val_metrics)

    def test_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> None:
        self._evaluate(batch, "test", self.test_metrics)

    def on_test_epoch_end(self) -> None:
        self._log_metrics("test", self.test_metrics)

    def configure_optimizers(self) -> dict[str, Any]:
        optim = self.optim
        backbone = [p for p in self.net.backbone.parameters() if p.requires_grad]
        groups = [{"params": list(self.net.heads.parameters()), "lr": optim.lr}]
        if backbone:
            groups.append({"params": backbone, "lr": optim.lr * optim.backbone_lr_scale})
        if optim.optimizer == "sgd":
            optimizer = torch.optim.SGD(groups, momentum=optim.momentum, weight_decay=optim.weight_decay)
        elif optim.optimizer == "adam":
            optimizer = torch.optim.Adam(groups, weight_decay=optim.weight_decay)
        else:
            optimizer = torch.optim.AdamW(groups, weight_decay=optim.weight_decay)
        if optim.scheduler == "none":
            return {"optimizer": optimizer}
        if optim.scheduler == "onecycle":
            # linear warm-up of every group to its own lr, then cosine annealing, stepped per batch: fine-tuning
            # pretrained weights without a warm-up lets the new head's first large gradients wreck the features
            scheduler = torch.optim.lr_scheduler.OneCycleLR(
                optimizer, max_lr=[group["lr"] for group in groups], total_steps=self.trainer.estimated_stepping_batches,
                pct_start=optim.warmup_share, anneal_strategy="cos",
            )  # fmt: skip
            return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=optim.max_epochs)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}


def load_module(checkpoint: Path, map_location: str | torch.device = "cpu") -> FaceTraitsModule:
    """Rebuild a trained module from a checkpoint (to resume or test it); to use the model, load_net suffices."""
    hparams, state = read_checkpoint(checkpoint, map_location)
    module = FaceTraitsModule(**hparams)
    try:
        module.load_state_dict(state)
    except RuntimeError as exc:
        raise ConfigError(f"{checkpoint}: weights do not fit the model it describes: {exc}") from None
    return module.eval()
