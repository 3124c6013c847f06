"""Human split-half reliability and the hand-crafted-feature baseline on the real OMI faces.

    python benchmarks/baselines_omi.py --path ../shared/datasets/omi --size 64

The data set goes through the prepare stage (pipelines/prepare.py) into a temporary folder, tracked
to a temporary MLflow store, so the numbers are those of exactly what the pipeline would feed the
baselines stage and nothing is written into the repository.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from facetraits.baselines.handcrafted import fit_svr_baseline, handcrafted_features
from facetraits.baselines.reliability import split_half_reliability
from facetraits.data.prepared import load_prepared
from facetraits.models.metrics import split_metrics

REPO = Path(__file__).resolve().parents[1]


def prepare(dataset: Path, size: int, tmp: Path) -> tuple[Path, float]:
    params = {
        "data": {"source": "omi", "path": str(dataset), "image_size": size},
        "tracking": {
            "uri": f"sqlite:///{tmp / 'mlflow.db'}",
            "experiment": "baselines-benchmark",
            "artifacts": str(tmp / "mlartifacts"),
        },
    }
    (tmp / "params.yaml").write_text(yaml.safe_dump(params), encoding="utf-8")
    command = [sys.executable, "pipelines/prepare.py", "--params", str(tmp / "params.yaml")]
    command += ["--out", str(tmp / "prepared"), "--summary", str(tmp / "prepare.json")]
    started = time.perf_counter()
    subprocess.run(command, cwd=REPO, check=True)
    return tmp / "prepared", time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--path", type=Path, default=REPO.parent / "shared" / "datasets" / "omi")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--hist-bins", type=int, default=16)
    parser.add_argument("--lbp-points", type=int, default=8)
    parser.add_argument("--lbp-radius", type=float, default=1.0)
    parser.add_argument("--hog-orientations", type=int, default=9)
    parser.add_argument("--hog-cell", type=int, default=8)
    parser.add_argument("--c-grid", type=float, nargs="+", default=[0.1, 0.3, 1.0, 3.0, 10.0])
    parser.add_argument("--epsilon", type=float, default=0.1)
    parser.add_argument("--n-jobs", type=int, default=1)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="facetraits-baselines-") as tmp:
        root, prepare_s = prepare(args.path.resolve(), args.size, Path(tmp))
        data = load_prepared(root)
        attributes = list(data.attributes)
        ratings = data.ratings()
        if ratings is None:
            raise SystemExit(f"{args.path}: no raw ratings; reliability needs them")

        started = time.perf_counter()
        reliability = split_half_reliability(ratings, attributes, args.repeats, args.seed)
        reliability_s = time.perf_counter() - started
        first_ratings = ratings[ratings["rating_type"].astype(str) != "repeat"]
        without_repeats = split_half_reliability(first_ratings, attributes, args.repeats, args.seed)

        started = time.perf_counter()
        features = handcrafted_features(
            data.images,
            args.hist_bins,
            args.lbp_points,
            args.lbp_radius,
            args.hog_orientations,
            args.hog_cell,
            args.n_jobs,
        )
        features_s = time.perf_counter() - started
        started = time.perf_counter()
        human = data.faces[attributes].to_numpy(dtype=np.float64)
        fit = fit_svr_baseline(
            features, human, data.indices("train"), data.indices("val"), args.c_grid, args.epsilon, "scale"
        )
        svr_s = time.perf_counter() - started
        test = data.indices("test")
        scores = split_metrics(fit.predictions[test], human[test], attributes)

    table = pd.DataFrame(
        {
            "reliability": reliability["reliability"],
            "no_repeats": without_repeats["reliability"],
            "ceiling": reliability["ceiling"],
            "ratings/face": reliability["ratings_per_face"],
            "svr_test_r": pd.Series(scores["pearson"]),
            "r/ceiling": pd.Series(scores["pearson"]) / reliability["ceiling"],
            "svr_val_r": pd.Series(fit.val_pearson, index=attributes),
            "C": pd.Series(fit.chosen_c, index=attributes),
        }
    ).sort_values("svr_test_r", ascending=False)
    print(table.round(3).to_string())
    rel = reliability["reliability"]
    print(
        f"\n{len(data.faces)} faces at {args.size}px ({len(test)} test), {len(ratings)} ratings, {len(attributes)} attributes\n"
        f"human split-half reliability ({args.repeats} repeats): mean {rel.mean():.3f}, "
        f"range {rel.min():.3f} ({rel.idxmin()}) .. {rel.max():.3f} ({rel.idxmax()}); "
        f"without OMI's repeat judgements mean {without_repeats['reliability'].mean():.3f}\n"
        f"hand-crafted baseline ({features.shape[1]} features): mean test Pearson r {scores['pearson_mean']:.3f}, "
        f"Spearman {scores['spearman_mean']:.3f}, R2 {scores['r2_mean']:.3f}, "
        f"mean r / ceiling {(table['r/ceiling']).mean():.3f}\n"
        f"time: prepare {prepare_s:.1f} s, reliability {reliability_s:.2f} s, features {features_s:.2f} s, SVR fits {svr_s:.2f} s"
    )


if __name__ == "__main__":
    main()
