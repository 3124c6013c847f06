"""DVC stage `manifold`: maps of all faces from backbone features, predicted and human ratings, scored and drawn."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from facetraits.config import load_params
from facetraits.data.prepared import load_prepared
from facetraits.errors import FaceTraitsError
from facetraits.files import ready_outputs
from facetraits.manifold.study import SCORED_SPLIT, manifold_study, model_vectors, write_manifold_outputs
from facetraits.models.evaluation import trained_checkpoints
from facetraits.models.training import Runtime
from facetraits.tracking import TAG_FINGERPRINT, flatten_params, stage_run

TAG_FEATURES_FROM = "facetraits.manifold.features_from"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--prepared", type=Path, default=Path("data/prepared"))
    parser.add_argument("--models", type=Path, default=Path("models"))
    parser.add_argument("--out", type=Path, default=Path("results/manifold"))
    args = parser.parse_args(argv)
    try:
        params = load_params(args.params)
        ready_outputs(args.out)
        data = load_prepared(args.prepared)
        checkpoints = trained_checkpoints(args.models)
        device = "cuda" if Runtime.resolve(params.train).accelerator == "gpu" else "cpu"
        with stage_run(params.tracking, "manifold", flatten_params(params.manifold, prefix="manifold.")) as run:
            run.set_tags({TAG_FINGERPRINT: data.meta["fingerprint"], TAG_FEATURES_FROM: str(checkpoints[0])})
            model = model_vectors(checkpoints, data.images, data.attributes, device)
            human = data.faces[list(data.attributes)]
            ids, train, test = data.faces["id"].to_numpy(), data.indices("train"), data.indices(SCORED_SPLIT)
            study = manifold_study(model, ids, human, train, test, params.manifold)
            outputs = write_manifold_outputs(study, args.out)
            run.log_metrics(outputs.flat_metrics)
            run.log_artifacts(args.out, "manifold")
    except FaceTraitsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    # A map of human ratings recovering human ratings is the reference, not a finding: the best model map is.
    model_maps = [face_map for face_map in study.maps if face_map.source != "human"] or list(study.maps)
    best = max(model_maps, key=lambda face_map: np.nan_to_num(face_map.knn_r_mean, nan=-1.0))
    shared = "" if len(checkpoints) == 1 else f" (the first of {len(checkpoints)} per-attribute models)"
    agreement = "" if study.agreement is None else f"; human vs model correlations r {study.agreement['pearson']:.2f}"
    seconds = sum(value for value in outputs.metrics["seconds"].values() if value is not None)
    print(
        f"manifold: {len(study.maps)} maps of {len(study.ids)} faces, features from {study.features_from}{shared}; "
        f"scored on {len(study.scored_rows)} {SCORED_SPLIT} faces: best mean kNN r {best.knn_r_mean:.2f} "
        f"({best.source} {best.method} {best.dims}-D){agreement}; {seconds:.0f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
