"""DVC stage `train`: fit the attribute model(s) on the prepared faces, score them, log everything to MLflow."""

from __future__ import annotations

import argparse
import sys
from contextlib import nullcontext
from pathlib import Path

from lightning.pytorch.loggers import MLFlowLogger
from lightning.pytorch.utilities import rank_zero_only

from facetraits.config import load_params, merge_overrides, variant_params
from facetraits.data.prepared import load_prepared
from facetraits.errors import FaceTraitsError
from facetraits.files import ready_outputs
from facetraits.models.evaluation import log_model, write_train_outputs
from facetraits.models.face_module import load_module
from facetraits.models.metrics import shown_score
from facetraits.models.training import train_study
from facetraits.sweep.outputs import read_best_params
from facetraits.tracking import TAG_FINGERPRINT, TAG_VARIANT, flatten_params, stage_run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--prepared", type=Path, default=Path("data/prepared"))
    parser.add_argument("--models", type=Path, default=Path("models"))
    parser.add_argument("--out", type=Path, default=Path("results/train"))
    parser.add_argument("--best-params", type=Path, help="a sweep's best_params.yaml, applied over params.yaml")
    parser.add_argument("--variant", help="train one of params.yaml's variants (its changes applied last)")
    args = parser.parse_args(argv)
    rank_zero = rank_zero_only.rank == 0
    try:
        params = load_params(args.params)
        if args.best_params is not None:
            params = merge_overrides(params, read_best_params(args.best_params), source=str(args.best_params))
        if args.variant is not None:
            params = variant_params(params, args.variant, str(args.params))
        data = load_prepared(args.prepared)
        if rank_zero:
            ready_outputs(args.out, args.models)
        stage = "train" if args.variant is None else f"train:{args.variant}"
        logged = flatten_params({"data": params.data, "model": params.model, "train": params.train})
        tracked = stage_run(params.tracking, stage, logged) if rank_zero else nullcontext()
        with tracked as run:
            if run is not None:
                run.set_tags({TAG_FINGERPRINT: data.meta["fingerprint"], TAG_VARIANT: args.variant or "main"})

            def logger_for(prefix: str | None) -> MLFlowLogger | bool:
                if run is None:
                    return False
                return MLFlowLogger(tracking_uri=params.tracking.uri, run_id=run.run_id, prefix=prefix or "")

            fits = train_study(data, params.model, params.train, args.models, logger_for)
            if run is None:
                return 0
            outputs = write_train_outputs(data, fits, args.out)
            run.log_metrics(outputs.flat_metrics)
            for path, folder in outputs.artifacts:
                run.log_artifact(path, folder)
            for fit in fits:
                net = load_module(fit.best_checkpoint).net
                name = "model" if len(fits) == 1 else f"model-{fit.attributes[0]}"
                log_model(run, net, name)
    except FaceTraitsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    summary = outputs.summary
    print(
        f"trained {len(fits)} model(s) on {len(data.attributes)} attribute(s): test mean Pearson r = "
        f"{shown_score(summary['test']['pearson_mean'])} (val {shown_score(summary['val']['pearson_mean'])}) -> "
        f"{args.models}, {args.out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
