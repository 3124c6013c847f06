"""LightningDataModule over the prepared image array: no decoding while training."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from facetraits.data.augment import augment_batch
from facetraits.data.prepared import PreparedData, load_prepared
from facetraits.data.split import SPLITS


class FaceArrayDataset(Dataset):
    """(uint8 CHW image, float targets with NaN for missing, data-set index) for the faces at `indices`.

    The memory map is opened lazily in each worker, so nothing large is pickled into workers.
    """

    def __init__(self, images_path: Path, indices: np.ndarray, targets: np.ndarray) -> None:
        self.images_path = images_path
        self.indices = indices
        self.targets = torch.from_numpy(targets.astype(np.float32))
        self._images: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, item: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        if self._images is None:
            self._images = np.load(self.images_path, mmap_mode="r")
        index = int(self.indices[item])
        image = torch.from_numpy(np.array(self._images[index])).permute(2, 0, 1)
        return image, self.targets[index], index


def lone_last_face(faces: int, batch_size: int, world_size: int = 1) -> bool:
    """Whether the last training batch of each process would hold one face: batch norm cannot train on it.

    The train loaders drop that batch (one face an epoch, a different one each epoch as batches are shuffled).
    """
    per_process = math.ceil(faces / max(world_size, 1))
    return per_process > 1 and per_process % batch_size == 1


@dataclass(frozen=True)
class AugmentSettings:
    hflip: float
    rotation_deg: float
    strength: float


class FaceDataModule(L.LightningDataModule):
    def __init__(
        self,
        prepared_dir: str,
        attributes: Sequence[str],
        batch_size: int,
        augment: dict[str, float],
        fit_splits: Sequence[str] = ("train",),
        num_workers: int = 0,
        pin_memory: bool = False,
        channels_last: bool = False,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.prepared_dir = Path(prepared_dir)
        self.attributes = list(attributes)
        self.augment = AugmentSettings(**augment)
        self.data: PreparedData | None = None
        self.datasets: dict[str, FaceArrayDataset] = {}

    def setup(self, stage: str | None = None) -> None:
        if self.data is not None:
            return
        self.data = load_prepared(self.prepared_dir)
        targets = self.data.faces[self.attributes].to_numpy(dtype=np.float64)
        images_path = self.data.root / "images.npy"
        # the "train" set is every face the model learns from: the val faces too with train.fit_on train+val
        rows = {split: self.data.indices(split) for split in SPLITS} | {"train": self.data.indices(*self.hparams.fit_splits)}
        self.datasets = {split: FaceArrayDataset(images_path, rows[split], targets) for split in SPLITS}

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        world_size = self.trainer.world_size if self.trainer is not None else 1
        return DataLoader(
            self.datasets[split],
            batch_size=self.hparams.batch_size,
            shuffle=shuffle,
            drop_last=shuffle and lone_last_face(len(self.datasets[split]), self.hparams.batch_size, world_size),
            num_workers=self.hparams.num_workers,
            pin_memory=self.hparams.pin_memory,
            persistent_workers=self.hparams.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """uint8 -> [0, 1] floats on the device, then augmentation for training batches only."""
        images, targets, index = batch
        images = images.float().div_(255)
        if self.trainer is not None and self.trainer.training:
            images = augment_batch(images, self.augment.hflip, self.augment.rotation_deg, self.augment.strength)
        if self.hparams.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return images, targets, index
