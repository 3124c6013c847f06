"""The whole predictor as one plain nn.Module: [0, 1] RGB images in, ratings in the data set's units out."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from facetraits.models.components.backbones import Backbone

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class FaceTraitsNet(nn.Module):
    """Backbone + heads, with ImageNet normalisation and the train-split target statistics inside.

    Keeping both inside the module means a saved model needs nothing else to turn pixels into ratings.
    """

    def __init__(
        self,
        backbone: Backbone,
        heads: nn.Module,
        target_mean: torch.Tensor,
        target_std: torch.Tensor,
        attributes: Sequence[str],
        image_size: int,
        hflip_average: bool = False,
        face_blocks: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.attributes = tuple(attributes)
        self.image_size = image_size
        self.hflip_average = hflip_average
        self.backbone = backbone
        self.heads = heads
        self.face_blocks = face_blocks  # dlib's face features beside the backbone's (a fused probe), or None
        self.register_buffer("pixel_mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("pixel_std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))
        self.register_buffer("target_mean", target_mean.detach().clone().float())
        self.register_buffer("target_std", target_std.detach().clone().float())

    def features(self, images: torch.Tensor, face_features: torch.Tensor | None = None) -> torch.Tensor:
        """Penultimate representation: pooled backbone features (in eval mode averaged with the mirrored face's
        if asked).

        Faces are near-symmetric and ratings do not depend on the side: averaging both views is a test-time
        augmentation carried by the model itself, so every user of the model (predict, explain, manifold) gets
        it. Training sees one view (random flips augment it) at half the cost. Face blocks, when the model has
        them, follow the backbone's features (they average the mirror image themselves): `face_features`, those
        of these very images already computed (the face_features stage's, by prepared row), or computed from the
        pixels when None.
        """
        normalized = (images - self.pixel_mean) / self.pixel_std
        if not self.hflip_average or self.training:
            pooled = self.backbone(normalized)
        else:
            pooled = (self.backbone(normalized) + self.backbone(normalized.flip(-1))) / 2
        if self.face_blocks is None:
            return pooled
        face = self.face_blocks(images) if face_features is None else face_features
        return torch.cat([pooled, face.to(pooled.dtype)], dim=1)

    @property
    def feature_dim(self) -> int:
        """The width of `features`: what the heads read."""
        return self.backbone.feature_dim + (0 if self.face_blocks is None else self.face_blocks.feature_dim)

    def standardized(self, images: torch.Tensor, face_features: torch.Tensor | None = None) -> torch.Tensor:
        """Predictions in train-split z-units, the scale the loss works on."""
        return self.heads(self.features(images, face_features))

    def forward(self, images: torch.Tensor, face_features: torch.Tensor | None = None) -> torch.Tensor:
        return self.standardized(images, face_features) * self.target_std + self.target_mean
