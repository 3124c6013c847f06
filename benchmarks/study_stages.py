"""Wall time, CPU time and peak memory of every stage of a study, the way `make study` runs it, in a fresh clone.

    python benchmarks/study_stages.py                       # the default study (dvc.yaml), in a temp clone
    python benchmarks/study_stages.py --keep /tmp/study     # keep the clone (its results, mlflow.db) there
    python benchmarks/study_stages.py --dvcfile studies/omi/dvc.yaml   # runs in studies/omi, its own DVC project
    python benchmarks/study_stages.py --uncommitted         # the working tree as it is, not the last commit

The clone is of the committed tree (`git clone` of this repository) unless --uncommitted copies the working
tree's changes over it. Each stage runs as `dvc repro --single-item <stage>` in dvc.yaml order; CPU is user +
system of that command and every child it waited for (on a busy machine wall time grows, CPU time much less);
peak memory is the largest sum of RSS over the command's process tree, sampled every 0.2 s. Stage output is
kept in <clone>/stage-logs/<stage>.log. The table is Markdown, ready for docs/benchmarks.md.
`benchmarks/scale.py` runs the same stages at several data sizes.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class StageCost:
    stage: str
    wall_s: float
    cpu_s: float  # user + system of the stage's whole process tree
    peak_rss_mb: float  # largest sampled sum of RSS over that tree


def clone_repository(clone: Path, uncommitted: bool = False) -> None:
    """`git clone` of this repository; with `uncommitted`, the working tree's changes and new files copied over."""
    subprocess.run(["git", "clone", "--quiet", str(REPO), str(clone)], check=True)
    if uncommitted:
        copy_changes(clone)


def copy_changes(clone: Path) -> None:
    """The working tree's changed, new and deleted files, made so in `clone` (a clone of this repository)."""
    listed = subprocess.run(["git", "ls-files", "-z", "--modified", "--others", "--exclude-standard"],
                            cwd=REPO, check=True, capture_output=True, text=True)  # fmt: skip
    for name in filter(None, listed.stdout.split("\0")):
        source, target = REPO / name, clone / name
        if source.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
        else:  # deleted in the working tree
            target.unlink(missing_ok=True)


def stage_names(clone: Path, dvcfile: str) -> list[str]:
    listed = subprocess.run(
        [sys.executable, "-m", "dvc", "stage", "list", "--name-only", dvcfile],
        cwd=clone, check=True, capture_output=True, text=True,
    )  # fmt: skip
    return [line.strip() for line in listed.stdout.splitlines() if line.strip()]


def stage_env(clone: Path, study: str) -> dict[str, str]:
    """The clone's own code, not whatever an editable install points at; `study` files the MLflow runs together."""
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    return {**os.environ, "PATH": path, "PYTHONPATH": str(clone / "src"), "FACETRAITS_STUDY": study}


def tree_rss_bytes(process: psutil.Process) -> int:
    total = 0
    for member in [process, *process.children(recursive=True)]:
        try:
            total += member.memory_info().rss
        except psutil.Error:  # ended between the listing and the reading
            pass
    return total


def run_stage(folder: Path, stage: str, env: dict[str, str], log: Path, every_s: float = 0.2) -> tuple[StageCost, int]:
    """One `dvc repro --single-item <stage>`, measured; returns its cost and exit status."""
    peak, done = 0, threading.Event()
    started = time.perf_counter()
    with open(log, "w") as handle:
        command = subprocess.Popen([sys.executable, "-m", "dvc", "repro", "--single-item", stage],
                                   cwd=folder, env=env, stdout=handle, stderr=subprocess.STDOUT)  # fmt: skip
        root = psutil.Process(command.pid)

        def sample() -> None:
            nonlocal peak
            while not done.wait(every_s):
                try:
                    peak = max(peak, tree_rss_bytes(root))
                except psutil.Error:  # the stage has ended
                    return

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        _, status, usage = os.wait4(command.pid, 0)  # rusage of the command and every descendant it waited for
        command.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - started
        done.set()
        sampler.join()
    peak = max(peak, usage.ru_maxrss * 1024)  # Linux: KiB of the largest single process, a floor for short stages
    return StageCost(stage, wall, usage.ru_utime + usage.ru_stime, peak / 2**20), command.returncode


def time_stages(clone: Path, dvcfile: str, study: str | None = None) -> list[StageCost]:
    """Cost per stage, in dvc.yaml order; stops at the first failing stage, naming its log."""
    logs = clone / "stage-logs"
    logs.mkdir(exist_ok=True)
    # one `dvc repro` per stage: the study id files their MLflow runs under one study, as one `dvc repro` would
    env = stage_env(clone, study or f"study_stages {dvcfile} {time.strftime('%Y-%m-%d %H:%M')}")
    rows = []
    folder = clone / Path(dvcfile).parent  # a study folder is a DVC project of its own: run there
    for stage in stage_names(folder, "dvc.yaml"):
        log = logs / f"{stage}.log"
        cost, returncode = run_stage(folder, stage, env, log)
        rows.append(cost)
        print(f"{stage}: wall {cost.wall_s:.0f} s, CPU {cost.cpu_s:.0f} s, peak RSS {cost.peak_rss_mb:.0f} MiB", flush=True)
        if returncode:
            raise SystemExit(f"stage {stage} failed (exit {returncode}); see {log}")
    return rows


def markdown_table(rows: list[StageCost]) -> str:
    lines = ["| stage | wall | CPU (user + sys) | peak RSS |", "| --- | --- | --- | --- |"]
    lines += [f"| {r.stage} | {r.wall_s:.0f} s | {r.cpu_s:.0f} s | {r.peak_rss_mb:.0f} MiB |" for r in rows]
    wall, cpu = sum(r.wall_s for r in rows), sum(r.cpu_s for r in rows)
    peak = max((r.peak_rss_mb for r in rows), default=0.0)
    lines.append(f"| total | {wall:.0f} s ({wall / 60:.1f} min) | {cpu:.0f} s | {peak:.0f} MiB (largest) |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dvcfile", default="dvc.yaml", help="the study's pipeline, relative to the repository")
    parser.add_argument("--keep", type=Path, help="clone into this (new) folder and keep it")
    parser.add_argument("--uncommitted", action="store_true", help="copy the working tree's changes into the clone")
    args = parser.parse_args()
    clone = args.keep or Path(tempfile.mkdtemp(prefix="facetraits-study-")) / "study"
    clone_repository(clone, args.uncommitted)
    try:
        print(markdown_table(time_stages(clone, args.dvcfile)))
    finally:
        if args.keep is None:
            shutil.rmtree(clone.parent, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
