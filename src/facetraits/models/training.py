"""Fit, evaluate and predict: the train stage's work, for the shared backbone or one model per attribute."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pandas as pd
import torch
from lightning.pytorch.callbacks import Callback, EarlyStopping, ModelCheckpoint
from lightning.pytorch.loggers import Logger
from lightning.pytorch.utilities.rank_zero import rank_zero_module

from facetraits.config import ModelParams, TrainParams
from facetraits.data.face_datamodule import FaceDataModule
from facetraits.data.face_features import CachedFaceFeatures
from facetraits.data.feature_datamodule import FeatureDataModule
from facetraits.data.prepared import PreparedData
from facetraits.errors import ConfigError, DataError
from facetraits.files import atomic_path, atomic_write_json
from facetraits.models.face_module import MONITOR, FaceTraitsModule, OptimSettings
from facetraits.models.inference import backbone_features, load_net, predict_images, resolve_precision, uses_gpu
from facetraits.models.probe import fit_ridge_probe, refit_ridge_probe

STATE_FILE = "train_state.json"
BEST = "best"
LAST = "last"

# What Lightning says on every fit about states this project chooses, by the start of the message: its models folder
# holds train_state.json, the frozen blocks stay in eval mode (Backbone.train), and its own tree code's use of a
# name torch deprecated.
EXPECTED_WARNINGS = (
    r"Checkpoint directory .* exists and is not empty",
    r"Found \d+ module\(s\) in eval mode at the start of training",
    r"`isinstance\(treespec, LeafSpec\)` is deprecated",
)
TIP_PREFIX = "💡 Tip:"  # Lightning's advertisements for its cloud services, logged as information


def _not_a_tip(record: logging.LogRecord) -> bool:
    return not record.getMessage().startswith(TIP_PREFIX)


@contextmanager
def quiet_lightning() -> Iterator[None]:
    """Within a fit, Lightning's tips and EXPECTED_WARNINGS are not shown; every other warning and line still is."""
    log = rank_zero_module.log  # the logger Lightning's rank-zero messages go to
    log.addFilter(_not_a_tip)
    try:
        with warnings.catch_warnings():
            for message in EXPECTED_WARNINGS:
                warnings.filterwarnings("ignore", message=message)
            yield
    finally:
        log.removeFilter(_not_a_tip)


@dataclass(frozen=True)
class Runtime:
    """train.* 'auto' choices resolved for the machine at hand."""

    accelerator: str
    precision: str
    channels_last: bool
    pin_memory: bool

    @classmethod
    def resolve(cls, train: TrainParams) -> Runtime:
        gpu = uses_gpu(train.accelerator)
        return cls(
            accelerator="gpu" if gpu else "cpu",
            precision=resolve_precision(train),
            channels_last=gpu if train.channels_last == "auto" else train.channels_last,
            pin_memory=gpu if train.pin_memory == "auto" else train.pin_memory,
        )


class EpochHistory(Callback):
    """Epoch-level train/val metrics as rows; kept in checkpoints so a resumed run has its whole history."""

    def __init__(self) -> None:
        self.rows: list[dict[str, float]] = []

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        row = {"epoch": float(trainer.current_epoch)}
        row.update({k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith(("train/", "val/"))})
        self.rows.append(row)

    def state_dict(self) -> dict[str, Any]:
        return {"rows": self.rows}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.rows = list(state_dict["rows"])


class FolderCheckpoint(ModelCheckpoint):
    """A ModelCheckpoint whose saved state names its files relative to its folder: the same training writes the
    same checkpoint bytes wherever its folder is (dvc.lock's hash of `models` is stable, DVC experiments run in
    other folders), and a moved folder still resumes with its best score."""

    _PATHS = ("best_model_path", "kth_best_model_path", "last_model_path")

    @property
    def state_key(self) -> str:
        # ModelCheckpoint's own key, so checkpoints written before this class resume with their state
        return super().state_key.replace(type(self).__qualname__, ModelCheckpoint.__qualname__, 1)

    def state_dict(self) -> dict[str, Any]:
        return self._with_paths(super().state_dict(), lambda path: os.path.relpath(path, self.dirpath), os.curdir)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if state_dict.get("dirpath") == os.curdir:
            state_dict = self._with_paths(state_dict, lambda path: os.path.join(self.dirpath, path), self.dirpath)
        super().load_state_dict(state_dict)

    def _with_paths(self, state: dict[str, Any], convert: Callable[[str], str], dirpath: str) -> dict[str, Any]:
        """`state` with every file path converted (empty ones stay empty) and `dirpath` as its folder."""
        paths = {key: convert(state[key]) if state.get(key) else state.get(key) for key in self._PATHS}
        best_k_models = {convert(path): score for path, score in state.get("best_k_models", {}).items()}
        return {**state, **paths, "best_k_models": best_k_models, "dirpath": dirpath}


@dataclass(frozen=True)
class FitResult:
    attributes: tuple[str, ...]
    best_checkpoint: Path
    history: pd.DataFrame
    test: dict[str, float]
    resumed_from_epoch: int | None
    # (val faces, attributes) ratings from a fit that did not learn from the val faces, when the model itself did
    # (fit_on train+val): the probe's train-only ridge or the holdout fit's last epoch; None otherwise
    holdout_val: np.ndarray | None = None


def fit_splits(train: TrainParams) -> tuple[str, ...]:
    """The splits the final model learns from (train.fit_on); val still makes every choice before that."""
    return ("train", "val") if train.refits_on_val else ("train",)


def target_statistics(faces: pd.DataFrame, attributes: Sequence[str], train_rows: np.ndarray) -> tuple[list[float], list[float]]:
    """Mean and sd per attribute over the faces the model learns from (NaN-aware); a constant attribute gets sd 1 to
    stay finite."""
    values = faces[list(attributes)].to_numpy(dtype=np.float64)[train_rows]
    mean = np.nanmean(values, axis=0)
    std = np.nanstd(values, axis=0)
    std = np.where(np.isfinite(std) & (std > 1e-8), std, 1.0)
    return mean.tolist(), std.tolist()


def run_signature(**parts: Any) -> str:
    """Identifies a training configuration, so only an interrupted run of the same one is resumed."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def fit_signature(data: PreparedData, attributes: Sequence[str], model: ModelParams, train: TrainParams) -> str:
    """What makes two fits the same: where they run (attribute_workers) is left out."""
    settings = {k: v for k, v in dataclasses.asdict(train).items() if k != "attribute_workers"}
    return run_signature(attributes=list(attributes), model=dataclasses.asdict(model), train=settings, fingerprint=data.meta.get("fingerprint"))


def _resume_checkpoint(checkpoint_dir: Path, signature: str, resume: bool) -> Path | None:
    state_file, last = checkpoint_dir / STATE_FILE, checkpoint_dir / f"{LAST}.ckpt"
    if resume and state_file.is_file() and last.is_file():
        state = json.loads(state_file.read_text())
        if state.get("signature") == signature and not state.get("complete"):
            return last
    for stale in checkpoint_dir.glob("*.ckpt"):
        stale.unlink(missing_ok=True)  # DDP ranks may race to clean the same folder
    return None


def _checkpoint_epoch(checkpoint: Path) -> int:
    """The epoch a resumable checkpoint ended; a truncated or foreign file is named, not a traceback."""
    try:
        return int(torch.load(checkpoint, map_location="cpu", weights_only=True)["epoch"])
    except Exception as exc:  # noqa: BLE001 - unpickling, truncation and a missing key all mean: not resumable
        raise ConfigError(
            f"{checkpoint}: cannot resume from this checkpoint ({type(exc).__name__}: {str(exc).splitlines()[0]}); "
            "delete it or set train.resume: false to start afresh"
        ) from None


def build_module(
    data: PreparedData, attributes: Sequence[str], model: ModelParams, train: TrainParams, inputs: str = "images",
    face_blocks: Sequence[str] = (),
) -> FaceTraitsModule:
    """A fresh module whose target statistics come from the faces it will learn from (with dlib's `face_blocks`
    beside the backbone for a fused probe)."""
    mean, std = target_statistics(data.faces, attributes, data.indices(*fit_splits(train)))
    return FaceTraitsModule(
        attributes=list(attributes),
        target_mean=mean,
        target_std=std,
        image_size=int(data.images.shape[1]),
        model={**dataclasses.asdict(model), **({"face_blocks": list(face_blocks)} if face_blocks else {})},
        optim=dataclasses.asdict(OptimSettings.of(train)),
        inputs=inputs,
    )


def build_datamodule(data: PreparedData, attributes: Sequence[str], train: TrainParams, runtime: Runtime) -> FaceDataModule:
    return FaceDataModule(
        prepared_dir=str(data.root),
        attributes=attributes,
        batch_size=train.batch_size,
        augment=dataclasses.asdict(train.augment),
        fit_splits=fit_splits(train),
        num_workers=train.num_workers,
        pin_memory=runtime.pin_memory,
        channels_last=runtime.channels_last,
    )


def build_trainer(
    train: TrainParams, runtime: Runtime, callbacks: list[Callback], logger: Logger | bool, root: Path, checkpointing: bool = True
) -> L.Trainer:
    return L.Trainer(
        enable_checkpointing=checkpointing,
        accelerator=runtime.accelerator,
        devices=train.devices,
        num_nodes=train.num_nodes,
        strategy=train.strategy,
        precision=runtime.precision,
        max_epochs=train.max_epochs,
        limit_val_batches=0 if train.refits_on_val else None,  # val faces are training faces then
        callbacks=callbacks,
        logger=logger,
        default_root_dir=root,
        enable_progress_bar=train.progress_bar,
        enable_model_summary=False,
        log_every_n_steps=1,
        num_sanity_val_steps=0,
    )


def train_study(
    data: PreparedData,
    model: ModelParams,
    train: TrainParams,
    checkpoint_dir: Path,
    logger_for: Callable[[str | None], Logger | bool] = lambda prefix: False,
    extra_callbacks: Sequence[Callback] = (),
    face_features: CachedFaceFeatures | None = None,
) -> list[FitResult]:
    """The shared backbone (one fit, every attribute), the paper's protocol (one model per attribute), or a
    linear probe of the frozen backbone (fused with the face blocks of `face_features`, if it names any)."""
    if train.protocol == "probe":
        return [fit_probe(data, data.attributes, model, train, checkpoint_dir, logger_for(None), face_features)]
    if train.protocol == "shared":
        holdout = holdout_val_predictions(data, model, train, checkpoint_dir, logger_for) if train.runs_holdout_fit else None
        fit = fit_attributes(data, data.attributes, model, train, checkpoint_dir, logger_for(None), extra_callbacks)
        return [dataclasses.replace(fit, holdout_val=holdout)]
    from facetraits.models.scheduling import fit_per_attribute  # it builds on this module

    return fit_per_attribute(data, model, train, checkpoint_dir, logger_for, extra_callbacks)


HOLDOUT_DIR = "holdout"


def holdout_val_predictions(
    data: PreparedData, model: ModelParams, train: TrainParams, checkpoint_dir: Path,
    logger_for: Callable[[str | None], Logger | bool],
) -> np.ndarray:  # fmt: skip
    """train.holdout_fit: the same schedule on the train faces alone (no early stopping, the last epoch kept, as
    the train+val fit keeps its), and that model's (val faces, attributes) predictions, out of sample."""
    schedule = dataclasses.replace(train, fit_on="train", holdout_fit=False, patience=train.max_epochs)
    folder = checkpoint_dir / HOLDOUT_DIR
    fit_attributes(data, data.attributes, model, schedule, folder, logger_for(HOLDOUT_DIR), run_test=False)
    net = load_net(folder / f"{LAST}.ckpt")
    return predict_images(net, data.images[data.indices("val")], train.batch_size, resolve_precision(train))


MIN_SPLIT_FACES = 2


def require_split_sizes(data: PreparedData, splits: Sequence[str]) -> None:
    """Batch norm needs two faces a batch and a Pearson r two faces a split: refuse smaller splits up front."""
    counts = {split: len(data.indices(split)) for split in ("train", "val", "test")}
    small = [split for split in splits if counts[split] < MIN_SPLIT_FACES]
    if small:
        sizes = ", ".join(f"{split} {count}" for split, count in counts.items())
        raise DataError(
            f"{data.root}: the {' and '.join(small)} split(s) have fewer than {MIN_SPLIT_FACES} faces ({sizes}); "
            "training needs at least 2 in each: add faces or change data.split"
        )


@quiet_lightning()
def fit_attributes(
    data: PreparedData,
    attributes: Sequence[str],
    model: ModelParams,
    train: TrainParams,
    checkpoint_dir: Path,
    logger: Logger | bool = False,
    extra_callbacks: Sequence[Callback] = (),
    run_test: bool = True,
) -> FitResult:
    """Train one multi-output model on the train split, select by mean val Pearson, score on test.

    With train.fit_on train+val there is nothing left to select on: the schedule runs to max_epochs (no early
    stopping) and the last epoch is the model.
    """
    require_split_sizes(data, ("train", "val", "test") if run_test else ("train", "val"))
    runtime = Runtime.resolve(train)
    L.seed_everything(train.seed, workers=True, verbose=False)
    module = build_module(data, attributes, model, train)
    if runtime.channels_last:
        module = module.to(memory_format=torch.channels_last)
    datamodule = build_datamodule(data, attributes, train, runtime)
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    signature = fit_signature(data, attributes, model, train)
    resume_from = _resume_checkpoint(checkpoint_dir, signature, train.resume)
    resumed_epoch = None if resume_from is None else _checkpoint_epoch(resume_from)
    history = EpochHistory()
    checkpoint = FolderCheckpoint(
        dirpath=checkpoint_dir, filename=BEST, monitor=None if train.refits_on_val else MONITOR, mode="max",
        save_weights_only=True, enable_version_counter=False,
    )  # fmt: skip
    # save_last only fires when `best` improves; resuming needs every epoch, with the optimizer state
    latest = FolderCheckpoint(dirpath=checkpoint_dir, filename=LAST, monitor=None, enable_version_counter=False)
    stopping = [] if train.refits_on_val else [EarlyStopping(monitor=MONITOR, mode="max", patience=train.patience)]
    callbacks = [checkpoint, latest, *stopping, history, *extra_callbacks]
    trainer = build_trainer(train, runtime, callbacks, logger, checkpoint_dir)
    if trainer.is_global_zero:
        atomic_write_json(checkpoint_dir / STATE_FILE, {"signature": signature, "complete": False})
    trainer.fit(module, datamodule=datamodule, ckpt_path=resume_from)
    epochs = pd.DataFrame(history.rows)  # before test(): restoring the best checkpoint rewinds the callback
    best = Path(checkpoint.best_model_path)
    results = trainer.test(module, datamodule=datamodule, ckpt_path=str(best), verbose=False) if run_test else [{}]
    if trainer.is_global_zero:
        atomic_write_json(checkpoint_dir / STATE_FILE, {"signature": signature, "complete": True})
    return FitResult(
        attributes=tuple(attributes),
        best_checkpoint=best,
        history=epochs,
        test={k: float(v) for k, v in results[0].items()},
        resumed_from_epoch=resumed_epoch,
    )


@quiet_lightning()
def fit_probe(
    data: PreparedData,
    attributes: Sequence[str],
    model: ModelParams,
    train: TrainParams,
    checkpoint_dir: Path,
    logger: Logger | bool = False,
    face_features: CachedFaceFeatures | None = None,
) -> FitResult:
    """Ridge per attribute on the frozen backbone's pooled features (and dlib's face features named in
    train.probe_blocks, read by prepared row from `face_features`: the face_features stage's), saved as a
    linear-head checkpoint.

    The checkpoint is an ordinary one (frozen backbone [+ face blocks] + linear head), scored by the same Lightning
    test loop as a trained model. Penalties and block weights are chosen on the val split (ridge on the train
    faces); with train.fit_on train+val each attribute's penalty is then refitted on both, and there is no val score.
    """
    started = time.perf_counter()
    probe_model = dataclasses.replace(model, head="linear", trainable_blocks=0, dropout=0.0)
    single = dataclasses.replace(train, devices=1, num_nodes=1, strategy="auto")  # seconds of work: one process
    runtime = Runtime.resolve(single)
    L.seed_everything(train.seed, workers=True, verbose=False)
    face_blocks = train.probe_blocks[1:]
    module = build_module(data, attributes, probe_model, single, face_blocks=face_blocks)
    if runtime.accelerator == "gpu":
        module = module.cuda()
    cached = None
    if face_blocks:
        if face_features is None:
            raise ConfigError(
                f"train.probe_blocks names {face_blocks}: a fused probe reads them from the face_features stage's output"
            )
        cached = face_features.columns(face_blocks)
        module.cached_face_features = torch.from_numpy(cached)  # the val and test loops' too
    # fp32: the ridge is fitted exactly
    features = backbone_features(module.net, data.images, train.batch_size, face_features=cached)
    feature_seconds = time.perf_counter() - started
    block_widths = [module.net.backbone.feature_dim]
    if face_blocks:
        block_widths += [face_features.blocks[block].shape[1] for block in face_blocks]
    columns = [data.attributes.index(a) for a in attributes]
    targets = data.faces[list(data.attributes)].to_numpy(dtype=np.float64)[:, columns]
    standardized = (targets - module.net.target_mean.cpu().numpy()) / module.net.target_std.cpu().numpy()
    train_rows, val_rows = data.indices("train"), data.indices("val")
    fit_started = time.perf_counter()
    probe = fit_ridge_probe(
        features[train_rows], standardized[train_rows], features[val_rows], standardized[val_rows], train.ridge_alphas,
        block_widths, train.probe_block_weights,
    )  # fmt: skip
    learned = data.indices(*fit_splits(train))
    holdout_val = None
    if train.refits_on_val:
        std, mean = module.net.target_std.cpu().numpy(), module.net.target_mean.cpu().numpy()
        holdout_val = probe.predict(features[val_rows]) * std + mean  # the train-only ridge's, in rating units
        probe = refit_ridge_probe(probe, features[learned], standardized[learned], block_widths)
    fit_seconds = time.perf_counter() - fit_started
    probe.load_into(module.net.heads)
    module = module.cpu()
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    for stale in [*checkpoint_dir.glob("*.ckpt"), checkpoint_dir / STATE_FILE]:
        stale.unlink(missing_ok=True)  # nothing to resume: a probe is refitted in seconds
    trainer = build_trainer(single, runtime, [], logger, checkpoint_dir, checkpointing=False)
    datamodule = build_datamodule(data, attributes, single, runtime)
    validated = {} if train.refits_on_val else trainer.validate(module, datamodule=datamodule, verbose=False)[0]
    train_loss = module.loss(
        torch.from_numpy(probe.predict(features[learned])), torch.from_numpy(standardized[learned]).float()
    )
    tested = trainer.test(module, datamodule=datamodule, verbose=False)[0]  # also attaches the module to save it
    best = checkpoint_dir / f"{BEST}.ckpt"
    with atomic_path(best) as tmp:
        trainer.save_checkpoint(tmp, weights_only=True)
    details = {
        "alpha": dict(zip(attributes, probe.alpha.tolist(), strict=True)),
        "alphas_tried": sorted(train.ridge_alphas),
        "features": int(features.shape[1]),
    }
    if face_blocks:  # a backbone-only probe's file stays as it was
        details["blocks"] = dict(zip(train.probe_blocks, block_widths, strict=True))
        details["block_weights"] = dict(zip(train.probe_blocks, probe.block_weights, strict=True))
        details["undetected_faces"] = data.faces["source_file"].iloc[face_features.undetected["row"].tolist()].tolist()
    atomic_write_json(checkpoint_dir / "probe.json", details)  # a DVC output: no timings, which MLflow keeps
    if isinstance(logger, Logger):
        logger.log_metrics({"probe/fit_seconds": fit_seconds, "probe/feature_seconds": feature_seconds})
        logger.log_metrics({f"probe/log10_alpha/{a}": float(np.log10(v)) for a, v in details["alpha"].items()})
    history = pd.DataFrame([{"epoch": 0.0, "train/loss": float(train_loss), **{k: float(v) for k, v in validated.items()}}])
    return FitResult(
        attributes=tuple(attributes),
        best_checkpoint=best,
        history=history,
        test={k: float(v) for k, v in tested.items()},
        resumed_from_epoch=None,
        holdout_val=holdout_val,
    )


@quiet_lightning()
def fit_heads_on_features(
    data: PreparedData,
    features: np.ndarray,
    model: ModelParams,
    train: TrainParams,
    callbacks: Sequence[Callback] = (),
) -> pd.DataFrame:
    """Train only the heads on cached frozen-backbone features (no checkpoints): the epoch history."""
    require_split_sizes(data, ("train", "val"))
    L.seed_everything(train.seed, workers=True, verbose=False)
    module = build_module(data, data.attributes, model, train, inputs="features")
    targets = data.faces[list(data.attributes)].to_numpy(dtype=np.float32)
    splits = {split: data.indices(split) for split in ("train", "val")}
    datamodule = FeatureDataModule(features, targets, splits, train.batch_size)
    history = EpochHistory()
    runtime = Runtime.resolve(train)
    trainer = build_trainer(train, runtime, [history, *callbacks], False, Path(tempfile.gettempdir()), checkpointing=False)
    trainer.fit(module, datamodule=datamodule)
    return pd.DataFrame(history.rows)


def cached_frozen_features(data: PreparedData, model: ModelParams, seed: int, cache_dir: Path) -> np.ndarray:
    """Features of the frozen backbone (random init drawn from `seed`), computed once per data set and backbone."""
    key = run_signature(
        backbone=model.backbone, weights=model.weights, seed=seed, fingerprint=data.meta.get("fingerprint"),
        size=int(data.images.shape[1]), pool=model.pool, hflip_average=model.hflip_average,
    )  # fmt: skip
    path = Path(cache_dir) / f"features-{key}.npy"
    if path.is_file():
        return np.load(path)
    L.seed_everything(seed, verbose=False)
    frozen = dataclasses.replace(model, trainable_blocks=0)
    features = backbone_features(build_module(data, data.attributes, frozen, TrainParams()).net, data.images)
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.save(handle, features)
    return features
