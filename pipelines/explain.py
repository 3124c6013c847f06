"""DVC stage `explain`: attribution maps of the trained model for every attribute and method, scored."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from facetraits.config import load_params
from facetraits.data.prepared import load_prepared
from facetraits.errors import ConfigError, FaceTraitsError
from facetraits.explain.outputs import write_explain_outputs
from facetraits.explain.study import explain_study
from facetraits.files import ready_outputs
from facetraits.models.evaluation import trained_checkpoints
from facetraits.models.face_module import load_module
from facetraits.models.training import Runtime
from facetraits.tracking import TAG_FINGERPRINT, flatten_params, stage_run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--prepared", type=Path, default=Path("data/prepared"))
    parser.add_argument("--models", type=Path, default=Path("models"))
    parser.add_argument("--out", type=Path, default=Path("results/explain"))
    args = parser.parse_args(argv)
    try:
        params = load_params(args.params)
        ready_outputs(args.out)
        data = load_prepared(args.prepared)
        wanted = data.attributes if params.explain.attributes == "all" else tuple(params.explain.attributes)
        unknown = sorted(set(wanted) - set(data.attributes))
        if unknown:
            raise ConfigError(f"explain.attributes: {unknown} not in the prepared data ({list(data.attributes)})")
        device = "cuda" if Runtime.resolve(params.train).accelerator == "gpu" else "cpu"
        with stage_run(params.tracking, "explain", flatten_params(params.explain, prefix="explain.")) as run:
            run.set_tags({TAG_FINGERPRINT: data.meta["fingerprint"]})
            explanations = []
            for checkpoint in trained_checkpoints(args.models):
                net = load_module(checkpoint).net.to(device)
                predicted = [a for a in wanted if a in net.attributes]
                if predicted:
                    explanations += explain_study(net, data, predicted, params.explain)
            if not explanations:
                raise ConfigError(
                    f"{args.params}: explain.attributes: no checkpoint under {args.models} predicts any of "
                    f"{list(wanted)}"
                )
            outputs = write_explain_outputs(data, explanations, args.out)
            run.log_metrics(outputs.flat_metrics)
            for explanation in explanations:
                run.log_artifacts(args.out / explanation.attribute, f"explain/{explanation.attribute}")
            run.log_artifact(args.out / "scores.json", "explain")
            run.log_artifact(args.out / "mean_heatmaps.png", "explain")
    except FaceTraitsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for method, scores in outputs.scores["mean"].items():
        print(
            f"{method:>22}: {outputs.maps_per_s[method]:.1f} maps/s, deletion AUC {scores['deletion_auc']}, "
            f"insertion AUC {scores['insertion_auc']}, randomization rank r {scores['randomization_rank_corr']}"
            + (f", mass accuracy {scores['mass_accuracy']}" if "mass_accuracy" in scores else "")
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
