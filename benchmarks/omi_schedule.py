"""How to fine-tune on real faces: the val mean r of the real-face study's fine-tune for several epoch counts and
backbone learning rates.

    python benchmarks/omi_schedule.py --prepared studies/omi/data/prepared --epochs 5 10 --backbone-lr-scales 0.1 0.25
    python benchmarks/omi_schedule.py --epochs 10 --seeds 42 43 44     # and the average of the seeds' fine-tunes

Each setting is its own one-cycle schedule with the study's other model and train settings, fitted on the
train split only (train.fit_on: train) so that the val faces judge it; the test split is never scored. The
study's train.max_epochs and train.backbone_lr_scale are read off this table, on val, before the final
model is refitted on train+val. With several --seeds every setting is fitted once per seed, and a last row
scores the average of their predictions (a seed ensemble: what more training time buys).
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import resource
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from facetraits.config import load_params
from facetraits.data.prepared import PreparedData, load_prepared
from facetraits.models.evaluation import predict_all_faces
from facetraits.models.face_module import MONITOR
from facetraits.models.inference import resolve_precision
from facetraits.models.metrics import split_metrics
from facetraits.models.training import fit_attributes

REPO = Path(__file__).resolve().parents[1]


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def val_mean_r(data: PreparedData, predictions: Sequence[np.ndarray]) -> float:
    """Mean val Pearson r of the averaged predictions (one array: that model's own)."""
    val = data.indices("val")
    human = data.faces[list(data.attributes)].to_numpy(dtype=np.float64)[val]
    return split_metrics(np.mean(predictions, axis=0)[val], human, data.attributes)["pearson_mean"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", type=Path, default=REPO / "studies" / "omi" / "params.yaml")
    parser.add_argument("--prepared", type=Path, default=REPO / "studies" / "omi" / "data" / "prepared")
    parser.add_argument("--epochs", type=int, nargs="+", default=[5, 10, 15])
    parser.add_argument("--backbone-lr-scales", type=float, nargs="+", default=None, help="default: the study's")
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="default: the study's train.seed")
    args = parser.parse_args()
    params = load_params(args.params)
    data = load_prepared(args.prepared)
    print(f"{len(data.indices('train'))} train faces, {len(data.indices('val'))} val faces, {data.images.shape[1]} px")
    print("| epochs | backbone lr scale | seed | val mean r (last epoch) | best epoch's | wall s | CPU s |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    scales = args.backbone_lr_scales or [params.train.backbone_lr_scale]
    seeds = args.seeds or [params.train.seed]
    for epochs, scale in itertools.product(args.epochs, scales):
        predictions = []
        for seed in seeds:
            train = dataclasses.replace(
                params.train, max_epochs=epochs, backbone_lr_scale=scale, seed=seed, fit_on="train",
                progress_bar=False, resume=False,
            )  # fmt: skip
            started, cpu = time.perf_counter(), cpu_seconds()
            with tempfile.TemporaryDirectory(prefix="facetraits-schedule-") as tmp:
                fit = fit_attributes(data, data.attributes, params.model, train, Path(tmp), run_test=False)
                if len(seeds) > 1:  # in the precision the study's predictions.csv is written in
                    predictions.append(predict_all_faces(data, [fit], resolve_precision(train)))
            scores = fit.history[MONITOR]
            print(
                f"| {epochs} | {scale:g} | {seed} | {scores.iloc[-1]:.3f} | {scores.max():.3f} (epoch "
                f"{int(scores.idxmax())}) | {time.perf_counter() - started:.0f} | {cpu_seconds() - cpu:.0f} |",
                flush=True,
            )
        if predictions:
            print(f"| {epochs} | {scale:g} | average of {len(predictions)} | {val_mean_r(data, predictions):.3f} | | | |")


if __name__ == "__main__":
    main()
