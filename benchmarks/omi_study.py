"""The real-face study (studies/omi): wall and CPU time by stage, and test r per attribute beside humans.

    python benchmarks/omi_study.py            # runs `dvc repro studies/omi/dvc.yaml`, then reports
    python benchmarks/omi_study.py --force    # every stage again (dvc repro --force)
    python benchmarks/omi_study.py --report-only

Run it under the bench lock on a shared machine (flock /tmp/facetraits-bench.lock ...). Stage times
come from the MLflow runs of the study's experiment (each stage is one run); CPU time is the whole
`dvc repro` (user + sys of every child process). Scores are read from the study's own outputs.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pandas as pd

from facetraits.config import load_params

REPO = Path(__file__).resolve().parents[1]
STUDY = REPO / "studies" / "omi"


def run_study(force: bool) -> tuple[float, float]:
    started = time.perf_counter()
    command = [sys.executable, "-m", "dvc", "repro", *(["--force"] if force else []), str(STUDY / "dvc.yaml")]
    subprocess.run(command, cwd=REPO, check=True)
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.perf_counter() - started, usage.ru_utime + usage.ru_stime


def stage_seconds(since_ms: int) -> pd.DataFrame:
    """Per-stage wall seconds of the MLflow runs started since `since_ms` (run from the study folder: its
    tracking URI may be relative to it)."""
    params = load_params(STUDY / "params.yaml")
    runs = mlflow.search_runs(
        experiment_names=[params.tracking.experiment],
        filter_string=f"attributes.start_time >= {since_ms}",
        tracking_uri=params.tracking.uri,
    )
    if "tags.facetraits.role" in runs:
        runs = runs[runs["tags.facetraits.role"] != "study"]  # the study's parent run spans all of its stages
    if runs.empty:
        return pd.DataFrame(columns=["stage", "seconds"])
    runs["seconds"] = (runs["end_time"] - runs["start_time"]).dt.total_seconds()
    return runs[["tags.mlflow.runName", "seconds"]].rename(columns={"tags.mlflow.runName": "stage"}).iloc[::-1]


def score_table() -> pd.DataFrame:
    results = STUDY / "results"
    finetuned = json.loads((results / "train" / "metrics.json").read_text())["test"]["pearson"]
    probe = json.loads((results / "variants" / "probe" / "metrics.json").read_text())["test"]["pearson"]
    baselines = json.loads((results / "baselines" / "metrics.json").read_text())
    table = pd.DataFrame({"finetuned": finetuned, "probe": probe})
    table["handcrafted"] = pd.Series(baselines["handcrafted"]["test"]["pearson"])
    for column in ("reliability", "ceiling"):
        table[f"human_{column}"] = pd.Series(baselines["human"].get(column, {}), dtype=float)
    table.loc["mean"] = table.mean()
    return table.round(3)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--force", action="store_true")
    parser.add_argument("--report-only", action="store_true")
    args = parser.parse_args()
    since_ms = 0 if args.report_only else int(time.time() * 1000)
    if not args.report_only:
        wall, cpu = run_study(args.force)
        print(f"dvc repro studies/omi: wall {wall:.0f} s, CPU (user+sys) {cpu:.0f} s")
    os.chdir(STUDY)
    print(stage_seconds(since_ms).to_string(index=False))
    probe = json.loads((STUDY / "variants" / "probe" / "models" / "probe.json").read_text())
    print(f"probe: {probe['features']} features in {probe['feature_seconds']} s, ridge fit {probe['fit_seconds']} s")
    print(score_table().to_string())
    return 0


if __name__ == "__main__":
    sys.exit(main())
