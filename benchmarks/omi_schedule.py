"""How to fine-tune on real faces: the val mean r of the real-face study's fine-tune for several epoch counts and
backbone learning rates.

    python benchmarks/omi_schedule.py --prepared studies/omi/data/prepared --epochs 5 10 --backbone-lr-scales 0.1 0.25

Each setting is its own one-cycle schedule with the study's other model and train settings, fitted on the
train split only (train.fit_on: train) so that the val faces judge it; the test split is never scored. The
study's train.max_epochs and train.backbone_lr_scale are read off this table, on val, before the final
model is refitted on train+val.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import resource
import tempfile
import time
from pathlib import Path

from facetraits.config import load_params
from facetraits.data.prepared import load_prepared
from facetraits.models.face_module import MONITOR
from facetraits.models.training import fit_attributes

REPO = Path(__file__).resolve().parents[1]


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", type=Path, default=REPO / "studies" / "omi" / "params.yaml")
    parser.add_argument("--prepared", type=Path, default=REPO / "studies" / "omi" / "data" / "prepared")
    parser.add_argument("--epochs", type=int, nargs="+", default=[5, 10, 15])
    parser.add_argument("--backbone-lr-scales", type=float, nargs="+", default=None, help="default: the study's")
    args = parser.parse_args()
    params = load_params(args.params)
    data = load_prepared(args.prepared)
    print(f"{len(data.indices('train'))} train faces, {len(data.indices('val'))} val faces, {data.images.shape[1]} px")
    print("| epochs | backbone lr scale | val mean r (last epoch) | best epoch's | wall s | CPU s |")
    print("| --- | --- | --- | --- | --- | --- |")
    scales = args.backbone_lr_scales or [params.train.backbone_lr_scale]
    for epochs, scale in itertools.product(args.epochs, scales):
        train = dataclasses.replace(
            params.train, max_epochs=epochs, backbone_lr_scale=scale, fit_on="train", progress_bar=False, resume=False
        )
        started, cpu = time.perf_counter(), cpu_seconds()
        with tempfile.TemporaryDirectory(prefix="facetraits-schedule-") as tmp:
            fit = fit_attributes(data, data.attributes, params.model, train, Path(tmp), run_test=False)
        scores = fit.history[MONITOR]
        print(
            f"| {epochs} | {scale:g} | {scores.iloc[-1]:.3f} | {scores.max():.3f} (epoch {int(scores.idxmax())}) | "
            f"{time.perf_counter() - started:.0f} | {cpu_seconds() - cpu:.0f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
