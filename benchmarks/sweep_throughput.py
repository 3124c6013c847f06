"""Sweep speed with a frozen backbone, one worker against two, and the best value against the defaults.

    python benchmarks/sweep_throughput.py --prepared data/omi-prepared --trials 30

Trials search sweep.space of --params and train the heads on cached backbone features
(model.trainable_blocks: 0), as a sweep with a frozen backbone does.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from facetraits.config import load_params, merge_overrides
from facetraits.data.prepared import load_prepared
from facetraits.models.face_module import MONITOR
from facetraits.models.training import cached_frozen_features, fit_heads_on_features
from facetraits.sweep.study import run_sweep


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prepared", required=True)
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--params", default="params.yaml", help="base params and sweep.space")
    args = parser.parse_args()
    defaults = load_params(Path(args.params))
    base = merge_overrides(defaults, {
        "model": {"trainable_blocks": 0},
        "train": {"progress_bar": False},
        "sweep": {"n_trials": args.trials, "max_epochs": args.epochs, "pruner": "median"},
        "tracking": {"uri": "sqlite:///:memory:"},
    })  # fmt: skip
    prepared = Path(args.prepared)
    data = load_prepared(prepared)
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp) / "cache"
        default_params = merge_overrides(base, {"train": {"max_epochs": args.epochs}})
        features = cached_frozen_features(data, base.model, base.train.seed, cache)
        default_value = float(fit_heads_on_features(data, features, default_params.model, default_params.train)[MONITOR].max())
        for workers in (1, 2):
            params = merge_overrides(base, {"sweep": {"workers": workers}})
            started = time.perf_counter()
            study = run_sweep(params, prepared, f"sqlite:///{tmp}/w{workers}.db", f"bench-{workers}", cache, None)
            minutes = (time.perf_counter() - started) / 60
            states = [t.state.name for t in study.trials]
            print(json.dumps({
                "workers": workers, "trials": len(study.trials), "trials_per_minute": round(len(study.trials) / minutes, 1),
                "pruned": states.count("PRUNED"), "failed": states.count("FAIL"),
                "best_val_pearson_mean": round(study.best_value, 4), "default_params_val_pearson_mean": round(default_value, 4),
                "best_params": study.best_params,
            }))  # fmt: skip


if __name__ == "__main__":
    main()
