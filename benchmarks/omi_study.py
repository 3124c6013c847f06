"""The real-face study (studies/omi): wall and CPU time by stage, and test r per attribute beside humans.

    python benchmarks/omi_study.py            # runs `dvc repro` in studies/omi (its own DVC project), then reports
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
    command = [sys.executable, "-m", "dvc", "repro", *(["--force"] if force else [])]
    subprocess.run(command, cwd=STUDY, check=True)  # a study folder is a DVC project of its own
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.perf_counter() - started, usage.ru_utime + usage.ru_stime


def stage_seconds(since_ms: int) -> pd.DataFrame:
    """Per-stage wall seconds of the MLflow runs started since `since_ms` (run from the study folder: its
    tracking URI may be relative to it)."""
    params = load_params(STUDY / "params.yaml")
    client = mlflow.MlflowClient(params.tracking.uri)  # the fluent search_runs takes no tracking URI (MLflow 3)
    experiment = client.get_experiment_by_name(params.tracking.experiment)
    runs = [] if experiment is None else client.search_runs(
        [experiment.experiment_id], filter_string=f"attributes.start_time >= {since_ms}", order_by=["attributes.start_time ASC"]
    )  # fmt: skip
    rows = [
        {"stage": run.info.run_name, "seconds": (run.info.end_time - run.info.start_time) / 1000}
        for run in runs
        if run.data.tags.get("facetraits.role") != "study" and run.info.end_time  # the study run spans every stage
    ]
    return pd.DataFrame(rows, columns=["stage", "seconds"])


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
    print(f"probe: {probe['features']} features (its timings: MLflow's probe/feature_seconds, probe/fit_seconds)")
    print(score_table().to_string())
    return 0


if __name__ == "__main__":
    sys.exit(main())
