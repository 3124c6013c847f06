"""Wall and CPU time of every stage of a study, the way `make study` runs it, in a fresh clone.

    python benchmarks/study_stages.py                       # the default study (dvc.yaml), in a temp clone
    python benchmarks/study_stages.py --keep /tmp/study     # keep the clone (its results, mlflow.db) there
    python benchmarks/study_stages.py --dvcfile studies/omi/dvc.yaml   # runs in studies/omi, its own DVC project

The clone is of the committed tree (`git clone` of this repository), so uncommitted changes are not
measured. Each stage runs as `dvc repro --single-item <stage>` in dvc.yaml order; CPU is user + system of
that command and its children (on a busy machine wall time grows, CPU time much less). Stage output is
kept in <clone>/stage-logs/<stage>.log. The table is Markdown, ready for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def stage_names(clone: Path, dvcfile: str) -> list[str]:
    listed = subprocess.run(
        [sys.executable, "-m", "dvc", "stage", "list", "--name-only", dvcfile],
        cwd=clone, check=True, capture_output=True, text=True,
    )  # fmt: skip
    return [line.strip() for line in listed.stdout.splitlines() if line.strip()]


def time_stages(clone: Path, dvcfile: str) -> list[tuple[str, float, float]]:
    """(stage, wall s, CPU s) per stage; stops at the first failing stage, naming its log."""
    logs = clone / "stage-logs"
    logs.mkdir(exist_ok=True)
    # The clone's own code, not whatever an editable install points at.
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    # one `dvc repro` per stage: the study id files their MLflow runs under one study, as one `dvc repro` would
    study = f"study_stages {dvcfile} {time.strftime('%Y-%m-%d %H:%M')}"
    env = {**os.environ, "PATH": path, "PYTHONPATH": str(clone / "src"), "FACETRAITS_STUDY": study}
    rows = []
    folder = clone / Path(dvcfile).parent  # a study folder is a DVC project of its own: run there
    for stage in stage_names(folder, "dvc.yaml"):
        log = logs / f"{stage}.log"
        cpu, started = children_cpu_seconds(), time.perf_counter()
        with open(log, "w") as handle:
            done = subprocess.run(
                [sys.executable, "-m", "dvc", "repro", "--single-item", stage],
                cwd=folder, env=env, stdout=handle, stderr=subprocess.STDOUT,
            )  # fmt: skip
        rows.append((stage, time.perf_counter() - started, children_cpu_seconds() - cpu))
        print(f"{stage}: wall {rows[-1][1]:.0f} s, CPU {rows[-1][2]:.0f} s", flush=True)
        if done.returncode:
            raise SystemExit(f"stage {stage} failed (exit {done.returncode}); see {log}")
    return rows


def markdown_table(rows: list[tuple[str, float, float]]) -> str:
    lines = ["| stage | wall | CPU (user + sys) |", "| --- | --- | --- |"]
    lines += [f"| {stage} | {wall:.0f} s | {cpu:.0f} s |" for stage, wall, cpu in rows]
    wall, cpu = sum(r[1] for r in rows), sum(r[2] for r in rows)
    lines.append(f"| total | {wall:.0f} s ({wall / 60:.1f} min) | {cpu:.0f} s |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dvcfile", default="dvc.yaml", help="the study's pipeline, relative to the repository")
    parser.add_argument("--keep", type=Path, help="clone into this (new) folder and keep it")
    args = parser.parse_args()
    clone = args.keep or Path(tempfile.mkdtemp(prefix="facetraits-study-")) / "study"
    subprocess.run(["git", "clone", "--quiet", str(REPO), str(clone)], check=True)
    try:
        print(markdown_table(time_stages(clone, args.dvcfile)))
    finally:
        if args.keep is None:
            shutil.rmtree(clone.parent, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
