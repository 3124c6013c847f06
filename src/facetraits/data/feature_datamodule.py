"""Cached frozen-backbone features served like images: (inputs, targets, data-set index) batches."""

from __future__ import annotations

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

from facetraits.data.face_datamodule import lone_last_face


class FeatureDataModule(L.LightningDataModule):
    """Lets a heads-only trial reuse the LightningModule, its metrics and callbacks unchanged."""

    def __init__(self, features: np.ndarray, targets: np.ndarray, splits: dict[str, np.ndarray], batch_size: int) -> None:
        super().__init__()
        self.batch_size = batch_size
        features_t = torch.from_numpy(np.asarray(features, dtype=np.float32))
        targets_t = torch.from_numpy(np.asarray(targets, dtype=np.float32))
        self.datasets = {
            split: TensorDataset(features_t[rows], targets_t[rows], torch.from_numpy(rows)) for split, rows in splits.items()
        }

    def train_dataloader(self) -> DataLoader:
        faces = len(self.datasets["train"])
        drop = lone_last_face(faces, self.batch_size, self.trainer.world_size if self.trainer is not None else 1)
        return DataLoader(self.datasets["train"], batch_size=self.batch_size, shuffle=True, drop_last=drop)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.datasets["val"], batch_size=self.batch_size)

    def test_dataloader(self) -> DataLoader:
        return DataLoader(self.datasets["test"], batch_size=self.batch_size)
