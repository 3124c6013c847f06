"""Every GPU figure in one short run: training images/s, DDP scaling, explain maps/s and peak memory.

    python benchmarks/gpu.py                        # one GPU node, ~3-4 minutes: VGG16 at 224 px
    python benchmarks/gpu.py --size 32 --faces 64 --batch 8 --steps 1 --cpu-ddp 2 --json out.json   # CPU smoke run

Sections (one JSON line each, and all together in --json):
- train: VGG16 one epoch through the data module and Lightning (data loading, augmentation, metrics,
  checkpointing included; the first epoch is a warm-up) in fp32 and in bf16-mixed + channels_last,
  next to the bare forward+backward+step rate of the same network on one in-memory batch;
- ddp: the bf16 pipeline on every visible GPU (strategy ddp) and its scaling over one GPU; on a CPU
  only when --cpu-ddp N asks for N processes;
- explain: maps/s per attribution method (explain's defaults: IG steps, GradientSHAP samples);
- peak memory: GPU bytes allocated (torch.cuda.max_memory_allocated), or the process's peak RSS on a CPU.
The goal it checks: VGG16 at 224 px, bf16-mixed + channels_last, >= 5,000 training images/s on one
H100-class GPU (~93 GFLOP a training image, 2 FLOP a multiply-add: ~47% of its
dense bf16 peak of 989 TFLOP/s; counting a multiply-add as one operation, as this goal once did, reads 25%).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from explain_throughput import IMAGE_METHOD_NAMES, maps_per_second, network
from facetraits.config import ExplainParams, StudyParams, parse_params
from facetraits.data.prepare import prepare_dataset
from facetraits.data.prepared import load_prepared
from facetraits.models.training import fit_attributes
from train_throughput import EpochTimer, raw_rate

GOAL_IMAGES_PER_S = 5000
MODES = {"fp32": ("32-true", False), "bf16_channels_last": ("bf16-mixed", True)}


def study(args: argparse.Namespace, precision: str, channels_last: bool, devices: int = 1, accelerator: str = "auto") -> StudyParams:
    return parse_params({
        "data": {"image_size": args.size, "synthetic": {"n_faces": args.faces}},
        "model": {"backbone": args.backbone, "trainable_blocks": 5},
        "train": {"max_epochs": args.steps + 1, "patience": args.steps + 1, "batch_size": args.batch, "progress_bar": False,
                  "precision": precision, "channels_last": channels_last, "devices": devices, "accelerator": accelerator,
                  "strategy": "ddp" if devices > 1 else "auto", "num_workers": args.workers},
    })  # fmt: skip


def device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def reset_peak() -> None:
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()


def peak_memory_mb() -> float:
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def pipeline_rate(args: argparse.Namespace, params: StudyParams, prepared: Path) -> float:
    """Training images/s through Lightning and the data module, epochs after the first."""
    data = load_prepared(prepared)
    timer = EpochTimer(warmup=1)
    models = prepared.parent / f"models-{params.train.precision}-{params.train.devices}"  # one folder for every DDP rank
    fit_attributes(data, data.attributes, params.model, params.train, models, extra_callbacks=[timer], run_test=False)
    return len(data.indices("train")) * timer.epochs / timer.seconds


def train_section(args: argparse.Namespace, prepared: Path) -> dict[str, object]:
    out: dict[str, object] = {"section": "train", "device": device(), "backbone": args.backbone, "size": args.size,
                              "batch": args.batch, "train_faces": len(load_prepared(prepared).indices("train"))}  # fmt: skip
    for mode, (precision, channels_last) in MODES.items():
        params = study(args, precision, channels_last)
        reset_peak()
        out[f"{mode}_pipeline_images_per_s"] = round(pipeline_rate(args, params, prepared), 2)
        out[f"{mode}_pipeline_peak_memory_mb"] = round(peak_memory_mb(), 1)
        reset_peak()
        raw = raw_rate(params, args.size, args.batch, args.raw_steps, precision, channels_last, device())
        out[f"{mode}_raw_images_per_s"] = round(raw, 2)
        out[f"{mode}_raw_peak_memory_mb"] = round(peak_memory_mb(), 1)
    out["goal_images_per_s"] = GOAL_IMAGES_PER_S
    out["goal_met"] = device() == "cuda" and args.size == 224 and out["bf16_channels_last_pipeline_images_per_s"] >= GOAL_IMAGES_PER_S
    return out


def ddp_rank(args: argparse.Namespace, prepared: Path) -> None:
    """A DDP run (Lightning starts the other ranks by running this same command line): rank 0 prints its rate."""
    precision, channels_last = MODES["bf16_channels_last"] if device() == "cuda" else MODES["fp32"]
    accelerator = "gpu" if device() == "cuda" else "cpu"
    params = study(args, precision, channels_last, devices=args.ddp_devices, accelerator=accelerator)
    rate = pipeline_rate(args, params, prepared)  # every rank's share of the faces, in rank 0's epoch time
    if torch.distributed.is_initialized() and torch.distributed.get_rank() != 0:
        return
    print("DDP " + json.dumps({"images_per_s": rate, "peak_memory_mb": peak_memory_mb()}), flush=True)


def ddp_section(args: argparse.Namespace, prepared: Path, devices: int, single_rate: float) -> dict[str, object]:
    command = [sys.executable, str(Path(__file__).resolve()), *sys.argv[1:], "--ddp-rank", "--ddp-devices", str(devices),
               "--prepared", str(prepared)]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith("DDP ")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"DDP run failed ({done.returncode}):\n{done.stderr[-3000:]}")
    result = json.loads(lines[-1][4:])
    return {"section": "ddp", "device": device(), "devices": devices, "images_per_s": round(result["images_per_s"], 2),
            "single_device_images_per_s": round(single_rate, 2), "scaling": round(result["images_per_s"] / single_rate, 3),
            "efficiency": round(result["images_per_s"] / single_rate / devices, 3),
            "peak_memory_mb_rank0": round(result["peak_memory_mb"], 1)}  # fmt: skip


def explain_section(args: argparse.Namespace) -> dict[str, object]:
    net = network(args.size, torch.device(device()))
    params = ExplainParams()
    out: dict[str, object] = {"section": "explain", "device": device(), "backbone": "vgg16_bn", "size": args.size,
                              "batch": args.explain_batch, "ig_steps": params.ig_steps, "shap_samples": params.shap_samples}  # fmt: skip
    reset_peak()
    for method in IMAGE_METHOD_NAMES:
        out[f"{method}_maps_per_s"] = round(maps_per_second(net, method, params, args.size, args.explain_batch, args.steps), 2)
    out["peak_memory_mb"] = round(peak_memory_mb(), 1)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--faces", type=int, default=6000, help="synthetic faces (64%% train); more epochs of fewer faces also work")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--backbone", default="vgg16")
    parser.add_argument("--steps", type=int, default=2, help="timed epochs (after a warm-up epoch) and explain repeats")
    parser.add_argument("--raw-steps", type=int, default=10)
    parser.add_argument("--workers", type=int, default=8, help="DataLoader workers")
    parser.add_argument("--explain-batch", type=int, default=32)
    parser.add_argument("--cpu-ddp", type=int, default=0, help="on a CPU, run the DDP section with this many processes")
    parser.add_argument("--json", type=Path, help="write every section here too")
    parser.add_argument("--prepared", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--ddp-rank", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--ddp-devices", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.ddp_rank:
        ddp_rank(args, args.prepared)
        return
    started = time.perf_counter()
    sections = []
    with tempfile.TemporaryDirectory(prefix="facetraits-gpu-") as tmp:
        prepared = Path(tmp) / "prepared"
        prepare_dataset(study(args, "32-true", False).data, prepared, progress=False)
        sections.append(train_section(args, prepared))
        print(json.dumps(sections[-1]), flush=True)
        devices = torch.cuda.device_count() if torch.cuda.is_available() else args.cpu_ddp
        if devices > 1:
            key = "bf16_channels_last" if torch.cuda.is_available() else "fp32"
            sections.append(ddp_section(args, prepared, devices, sections[0][f"{key}_pipeline_images_per_s"]))
        else:
            sections.append({"section": "ddp", "skipped": "one device visible"})
        print(json.dumps(sections[-1]), flush=True)
    sections.append(explain_section(args))
    print(json.dumps(sections[-1]), flush=True)
    sections.append({"section": "total", "seconds": round(time.perf_counter() - started, 1)})
    print(json.dumps(sections[-1]), flush=True)
    if args.json is not None:
        args.json.write_text(json.dumps(sections, indent=1))


if __name__ == "__main__":
    main()
