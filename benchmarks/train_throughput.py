"""Training throughput against the raw backbone, and the cost of the per-attribute protocol.

    python benchmarks/train_throughput.py pipeline --size 128 224
    python benchmarks/train_throughput.py protocols --prepared data/omi-prepared --epochs 1 --workers 1 2
    python benchmarks/train_throughput.py accuracy --prepared data/omi-prepared

`pipeline`: images/s of one training epoch through the data module and Lightning (augmentation,
metrics and checkpointing included) next to the bare forward+backward rate of the same network on
one in-memory batch: the gap is the data-pipeline and bookkeeping overhead.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import resource
import tempfile
import time
from pathlib import Path

import lightning as L
import torch

from facetraits.config import StudyParams, parse_params
from facetraits.data.prepare import prepare_dataset
from facetraits.data.prepared import load_prepared
from facetraits.models.evaluation import summary_metrics
from facetraits.models.face_module import FaceTraitsModule
from facetraits.models.training import fit_attributes, train_study


def _module(params: StudyParams, attributes: list[str], size: int) -> FaceTraitsModule:
    n = len(attributes)
    optim = {"loss": "mse", "huber_delta": 1.0, "pearson_weight": 0.5, "optimizer": "adamw", "lr": 1e-3,
             "backbone_lr_scale": 1.0, "weight_decay": 0.0, "momentum": 0.9, "scheduler": "none", "max_epochs": 1}  # fmt: skip
    return FaceTraitsModule(attributes, [0.0] * n, [1.0] * n, size, dataclasses.asdict(params.model), optim)


def raw_rate(
    params: StudyParams, size: int, batch: int, steps: int = 3, precision: str = "32-true", channels_last: bool = False,
    device: str = "cpu",
) -> float:
    """Images/s of forward+backward+step on one in-memory batch (the first step is a warm-up)."""
    module = _module(params, ["a"] * 10, size).train().to(device)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    module = module.to(memory_format=memory_format)
    optimizer = torch.optim.AdamW([p for p in module.parameters() if p.requires_grad])
    images = torch.rand(batch, 3, size, size, device=device).contiguous(memory_format=memory_format)
    target = torch.randn(batch, 10, device=device)
    autocast = torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=precision == "bf16-mixed")
    for step in range(steps + 1):
        if step == 1:
            _synchronize(device)
            started = time.perf_counter()
        optimizer.zero_grad()
        with autocast:
            loss = module.loss(module.net.standardized(images).float(), target)
        loss.backward()
        optimizer.step()
    _synchronize(device)
    return batch * steps / (time.perf_counter() - started)


def _synchronize(device: str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


class EpochTimer(L.Callback):
    """Wall time of the training epochs alone (validation, test and checkpoints excluded), after `warmup` epochs."""

    def __init__(self, warmup: int = 0) -> None:
        self.warmup = warmup
        self.seconds = 0.0
        self.epochs = 0

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.started = time.perf_counter()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: object, batch: object, batch_idx: int) -> None:
        if batch_idx == trainer.num_training_batches - 1:
            _synchronize(str(pl_module.device))  # the GPU has finished the epoch's work, not just queued it
        self.last_batch = time.perf_counter()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.current_epoch >= self.warmup:
            self.seconds += self.last_batch - self.started
            self.epochs += 1


def pipeline(args: argparse.Namespace) -> None:
    for size in args.size:
        params = parse_params({"data": {"image_size": size, "synthetic": {"n_faces": args.faces}},
                               "train": {"max_epochs": 1, "progress_bar": False, "batch_size": args.batch}})  # fmt: skip
        with tempfile.TemporaryDirectory() as tmp:
            prepare_dataset(params.data, Path(tmp) / "prepared", progress=False)
            data = load_prepared(Path(tmp) / "prepared")
            timer = EpochTimer()
            fit_attributes(data, data.attributes, params.model, params.train, Path(tmp) / "models", extra_callbacks=[timer])
        train_images = len(data.indices("train"))
        epoch_seconds = timer.seconds
        raw = raw_rate(params, size, args.batch)
        print(json.dumps({"size": size, "backbone": params.model.backbone, "train_faces": train_images,
                          "train_epoch_seconds": round(epoch_seconds, 1),
                          "pipeline_images_per_s": round(train_images / epoch_seconds, 1),
                          "raw_forward_backward_images_per_s": round(raw, 1)}))  # fmt: skip


def protocols(args: argparse.Namespace) -> None:
    """Shared backbone, then one model per attribute with each --workers count (train.attribute_workers)."""
    data = load_prepared(Path(args.prepared))
    if args.attributes:
        data = type(data)(data.root, data.images, data.faces, {**data.meta, "attributes": list(data.attributes[: args.attributes])})
    runs = [("shared", 1)] + [("per_attribute", workers) for workers in args.workers]
    for protocol, workers in runs:
        params = parse_params({"train": {"protocol": protocol, "max_epochs": args.epochs, "progress_bar": False,
                                         "attribute_workers": workers}})  # fmt: skip
        with tempfile.TemporaryDirectory() as tmp:
            cpu = _cpu_seconds()
            started = time.perf_counter()
            train_study(data, params.model, params.train, Path(tmp))
        print(json.dumps({"protocol": protocol, "attribute_workers": workers, "attributes": len(data.attributes),
                          "epochs": args.epochs, "image_size": int(data.images.shape[1]),
                          "seconds": round(time.perf_counter() - started, 1), "cpu_seconds": round(_cpu_seconds() - cpu, 1)}))  # fmt: skip


def _cpu_seconds() -> float:
    """User + system time of this process and its finished children (the attribute workers)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def accuracy(args: argparse.Namespace) -> None:
    params = parse_params({"train": {"progress_bar": False}})
    data = load_prepared(Path(args.prepared))
    with tempfile.TemporaryDirectory() as tmp:
        fits = train_study(data, params.model, params.train, Path(tmp))
    summary = summary_metrics(fits)
    print(json.dumps({"test_pearson_mean": summary["test"]["pearson_mean"], "test_pearson": summary["test"]["pearson"],
                      "epochs": summary["epochs"]}, indent=1))  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    one = commands.add_parser("pipeline")
    one.add_argument("--size", type=int, nargs="+", default=[128, 224])
    one.add_argument("--faces", type=int, default=200)
    one.add_argument("--batch", type=int, default=32)
    one.set_defaults(run=pipeline)
    two = commands.add_parser("protocols")
    two.add_argument("--prepared", required=True)
    two.add_argument("--epochs", type=int, default=1)
    two.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="attribute_workers values for per_attribute")
    two.add_argument("--attributes", type=int, default=0, help="only the first N attributes (0 = all)")
    two.set_defaults(run=protocols)
    three = commands.add_parser("accuracy")
    three.add_argument("--prepared", required=True)
    three.set_defaults(run=accuracy)
    args = parser.parse_args()
    args.run(args)


if __name__ == "__main__":
    main()
