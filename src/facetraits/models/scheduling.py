"""The paper's protocol (one model per attribute) spread over devices: attributes run in parallel processes.

Each attribute's fit is independent: it is seeded by train.seed alone, so the same attribute gives the
same model whichever process, order or neighbour it runs with. A worker process owns one GPU (or, on a
CPU, a share of the cores) and takes the next attribute still to do. A finished attribute leaves a
record (fit.json: its configuration's signature, epoch history, test scores and the metrics Lightning
logged) next to its checkpoints; a rerun of the same configuration skips it, and an interrupted one
resumes from its last.ckpt. The metrics are replayed into the one MLflow run by the parent process,
with the keys and steps a live logger would have used.

With more devices than attributes the spare devices stay idle (DDP inside an attribute's group of
devices is not implemented); across nodes each torchrun / SLURM task fits a slice (`facetraits fit-attributes`,
docs/scale-out.md).
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.multiprocessing as mp
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import Logger
from lightning.pytorch.utilities import rank_zero_only

from facetraits.config import ModelParams, TrainParams
from facetraits.data.prepared import IMAGES_FILE, PreparedData
from facetraits.errors import ConfigError
from facetraits.files import atomic_write_json
from facetraits.models.slices import attribute_slice
from facetraits.models.training import FitResult, Runtime, fit_attributes, fit_signature

RECORD_FILE = "fit.json"


class MetricsRecorder(Logger):
    """A Lightning logger that keeps what it is given, to be replayed into MLflow by the parent process."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[tuple[int | None, dict[str, float]]] = []

    @property
    def name(self) -> str:
        return "recorder"

    @property
    def version(self) -> int:
        return 0

    @rank_zero_only
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self.rows.append((step, {key: float(value) for key, value in metrics.items()}))

    @rank_zero_only
    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        pass


@dataclass(frozen=True)
class AttributeFit:
    """One attribute's finished fit, as its record file keeps it."""

    fit: FitResult
    logged: list[tuple[int | None, dict[str, float]]]


def attribute_workers(train: TrainParams, n_attributes: int) -> int:
    """Parallel processes for the per-attribute protocol: one per GPU, or on a CPU one per two cores."""
    if train.attribute_workers != "auto":
        return max(1, min(train.attribute_workers, n_attributes))
    if Runtime.resolve(train).accelerator == "gpu":
        return max(1, min(torch.cuda.device_count(), n_attributes))
    return max(1, min((os.cpu_count() or 1) // 2, n_attributes))


def fit_per_attribute(
    data: PreparedData,
    model: ModelParams,
    train: TrainParams,
    checkpoint_dir: Path,
    logger_for: Callable[[str | None], Logger | bool] = lambda prefix: False,
    extra_callbacks: Sequence[Callback] = (),
) -> list[FitResult]:
    """One model per attribute, in data.attributes order; attributes already done for this configuration are skipped."""
    done = _fit_attributes_left(data, data.attributes, model, train, Path(checkpoint_dir), extra_callbacks)
    fits = []
    for attribute in data.attributes:
        record = done[attribute]
        logger = logger_for(attribute)
        if isinstance(logger, Logger):
            for step, metrics in record.logged:
                logger.log_metrics(metrics, step)
            logger.finalize("success")
        fits.append(record.fit)
    return fits


def _fit_attributes_left(
    data: PreparedData,
    attributes: Sequence[str],
    model: ModelParams,
    train: TrainParams,
    checkpoint_dir: Path,
    extra_callbacks: Sequence[Callback] = (),
) -> dict[str, AttributeFit]:
    """Every one of `attributes`: read where its record says it is done for this configuration, else fitted, in
    `train.attribute_workers` processes."""
    done = {a: _finished(data, a, model, train, checkpoint_dir / a) for a in attributes} if train.resume else {}
    todo = [a for a in attributes if done.get(a) is None]
    workers = attribute_workers(train, len(todo)) if todo else 1
    if workers == 1:
        for attribute in todo:
            done[attribute] = fit_one_attribute(data, attribute, model, train, checkpoint_dir / attribute, extra_callbacks)
    else:
        done.update(_fit_in_parallel(data, todo, model, train, checkpoint_dir, extra_callbacks, workers))
    return done


def fit_attribute_slice(
    data: PreparedData, model: ModelParams, train: TrainParams, checkpoint_dir: Path, rank: int, world: int
) -> list[str]:
    """One task's share of the paper's protocol across nodes: its attributes' models and records, nothing else.

    Every task writes into the same shared `checkpoint_dir`; a later `dvc repro train` on one node finds every
    record, fits nothing and writes the stage's outputs and its one MLflow run, as after a serial loop.
    Returns the attributes of this slice.
    """
    if train.protocol != "per_attribute":
        raise ConfigError(f"train.protocol is {train.protocol!r}: only per_attribute fits attributes in slices")
    share = attribute_slice(data.attributes, rank, world)
    _fit_attributes_left(data, share, model, train, Path(checkpoint_dir))
    return share


def fit_one_attribute(
    data: PreparedData,
    attribute: str,
    model: ModelParams,
    train: TrainParams,
    attribute_dir: Path,
    extra_callbacks: Sequence[Callback] = (),
    signature: str | None = None,
) -> AttributeFit:
    """Fit one attribute's model and leave its record file (under `signature`, default: this fit's), which marks it done."""
    recorder = MetricsRecorder()
    fit = fit_attributes(data, [attribute], model, train, attribute_dir, recorder, extra_callbacks)
    record = AttributeFit(fit=fit, logged=recorder.rows)
    if rank_zero_only.rank == 0:
        signature = signature or fit_signature(data, [attribute], model, train)
        atomic_write_json(attribute_dir / RECORD_FILE, _record_json(record, signature))
    return record


def _record_json(record: AttributeFit, signature: str) -> dict[str, Any]:
    fit = record.fit
    return {
        "signature": signature,
        "attributes": list(fit.attributes),
        "history": fit.history.to_dict(orient="records"),
        "history_columns": list(fit.history.columns),
        "test": fit.test,
        "resumed_from_epoch": fit.resumed_from_epoch,
        "logged": [[step, metrics] for step, metrics in record.logged],
    }


def _read_record(attribute_dir: Path) -> AttributeFit:
    content = json.loads((attribute_dir / RECORD_FILE).read_text(encoding="utf-8"))
    history = pd.DataFrame(content["history"], columns=content["history_columns"])
    fit = FitResult(
        attributes=tuple(content["attributes"]),
        best_checkpoint=attribute_dir / "best.ckpt",
        history=history,
        test=content["test"],
        resumed_from_epoch=content["resumed_from_epoch"],
    )
    return AttributeFit(fit=fit, logged=[(step, metrics) for step, metrics in content["logged"]])


def _finished(data: PreparedData, attribute: str, model: ModelParams, train: TrainParams, attribute_dir: Path) -> AttributeFit | None:
    """The record of a finished fit of this same configuration, or None (absent, different or unreadable)."""
    record_file = attribute_dir / RECORD_FILE
    if not (record_file.is_file() and (attribute_dir / "best.ckpt").is_file()):
        return None
    try:
        if json.loads(record_file.read_text(encoding="utf-8")).get("signature") != fit_signature(data, [attribute], model, train):
            return None
        return _read_record(attribute_dir)
    except (ValueError, KeyError, TypeError):
        return None


def _fit_in_parallel(
    data: PreparedData,
    attributes: Iterable[str],
    model: ModelParams,
    train: TrainParams,
    checkpoint_dir: Path,
    extra_callbacks: Sequence[Callback],
    workers: int,
) -> dict[str, AttributeFit]:
    """Fresh (spawned) processes, each pinned to one GPU or a share of the cores, take attributes in turn."""
    runtime = Runtime.resolve(train)
    context = mp.get_context("spawn")
    slots = context.Queue()
    if runtime.accelerator == "gpu":
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        devices = visible.split(",") if visible else [str(i) for i in range(torch.cuda.device_count())]
        for worker in range(workers):
            slots.put({"CUDA_VISIBLE_DEVICES": devices[worker % len(devices)]})
    else:
        threads = max(1, torch.get_num_threads() // workers)
        for _ in range(workers):
            slots.put({"threads": threads})
    single = dataclasses.replace(train, devices=1, num_nodes=1, strategy="auto")  # a device each: no DDP inside
    shared = {"faces": data.faces, "meta": data.meta, "root": str(data.root)}
    started = time.perf_counter()
    with ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_claim_slot, initargs=(slots,)) as pool:
        futures = {
            attribute: pool.submit(
                _worker_fit, shared, attribute, model, single, str(checkpoint_dir / attribute), list(extra_callbacks),
                fit_signature(data, [attribute], model, train),
            )
            for attribute in attributes
        }
        for future in futures.values():
            future.result()  # a failed fit raises here, with its own traceback
    print(f"fitted {len(futures)} attribute model(s) in {workers} processes in {time.perf_counter() - started:.0f} s", flush=True)
    return {attribute: _read_record(checkpoint_dir / attribute) for attribute in futures}


def _claim_slot(slots: Any) -> None:
    slot = slots.get()
    if "CUDA_VISIBLE_DEVICES" in slot:
        os.environ["CUDA_VISIBLE_DEVICES"] = slot["CUDA_VISIBLE_DEVICES"]
    else:
        torch.set_num_threads(slot["threads"])


def _worker_fit(
    shared: dict[str, Any],
    attribute: str,
    model: ModelParams,
    single: TrainParams,
    attribute_dir: str,
    extra_callbacks: list[Callback],
    signature: str,
) -> None:
    """Runs in a worker: the images are reopened as a memory map rather than copied through a pipe."""
    root = Path(shared["root"])
    data = PreparedData(root=root, images=np.load(root / IMAGES_FILE, mmap_mode="r"), faces=shared["faces"], meta=shared["meta"])
    fit_one_attribute(data, attribute, model, single, Path(attribute_dir), extra_callbacks, signature)
