"""Human split-half reliability and the hand-crafted-feature baseline on the real OMI faces.

    python benchmarks/baselines_omi.py --path ../shared/datasets/omi --size 64

The data set goes through the prepare stage (pipelines/prepare.py) into a temporary folder, tracked
to a temporary MLflow store, and the baselines stage's own functions run on it with params.yaml's
`baselines` section, so the numbers are the stage's and nothing is written into the repository. The
`with_repeats` column is the reliability had OMI's repeated judgements been kept.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import yaml

from facetraits.baselines.reliability import split_half_reliability
from facetraits.baselines.study import baseline_metrics, run_baselines
from facetraits.config import load_params
from facetraits.data.prepared import load_prepared

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
    parser.add_argument("--params", type=Path, default=REPO / "params.yaml", help="its baselines section is used")
    args = parser.parse_args()
    params = load_params(args.params).baselines

    with tempfile.TemporaryDirectory(prefix="facetraits-baselines-") as tmp:
        root, prepare_s = prepare(args.path.resolve(), args.size, Path(tmp))
        data = load_prepared(root)
        ratings = data.ratings()
        if ratings is None:
            raise SystemExit(f"{args.path}: no raw ratings; reliability needs them")
        results = run_baselines(data, params)
        metrics = baseline_metrics(data, results)
        with_repeats = split_half_reliability(ratings, data.attributes, params.reliability_repeats, params.seed)

    reliability = results.reliability
    test = metrics["handcrafted"]["test"]
    svr_r = pd.Series(test["pearson"])
    table = pd.DataFrame(
        {
            "reliability": reliability["reliability"],
            "with_repeats": with_repeats["reliability"],
            "ceiling": reliability["ceiling"],
            "ratings/face": reliability["ratings_per_face"],
            "svr_test_r": svr_r,
            "r/ceiling": svr_r / reliability["ceiling"],
            "svr_val_r": pd.Series(results.handcrafted.val_pearson, index=list(data.attributes)),
            "C": pd.Series(metrics["handcrafted"]["chosen_c"]),
        }
    ).sort_values("svr_test_r", ascending=False)
    print(table.round(3).to_string())
    rel = reliability["reliability"]
    print(
        f"\n{len(data.faces)} faces at {args.size}px ({len(data.indices('test'))} test), {len(ratings)} ratings, "
        f"{len(data.attributes)} attributes; rating types left out: {params.exclude_rating_types}\n"
        f"human split-half reliability ({params.reliability_repeats} repeats): mean {rel.mean():.3f}, "
        f"range {rel.min():.3f} ({rel.idxmin()}) .. {rel.max():.3f} ({rel.idxmax()}); "
        f"with every rating {with_repeats['reliability'].mean():.3f}\n"
        f"hand-crafted baseline: mean test Pearson r {test['pearson_mean']:.3f}, Spearman {test['spearman_mean']:.3f}, "
        f"R2 {test['r2_mean']:.3f}, mean r / ceiling {table['r/ceiling'].mean():.3f}\n"
        f"time: prepare {prepare_s:.1f} s, " + ", ".join(f"{k} {v:.2f} s" for k, v in results.seconds.items())
    )


if __name__ == "__main__":
    main()
