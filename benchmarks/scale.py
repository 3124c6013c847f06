"""Cost of every stage as the faces grow: the default study at several numbers of synthetic faces.

    python benchmarks/scale.py                                   # 1,000 2,000 4,000 8,000 faces, 64 px, 1 epoch
    python benchmarks/scale.py --faces 1000 2000 --json /tmp/scale.json
    python benchmarks/scale.py --table /tmp/scale.json           # the table again, from saved figures
    python benchmarks/scale.py --faces 1000 2000 --keep /tmp/scale --json /tmp/scale.json --rerun manifold
                                  # after a change: those stages again in the kept clones, with the new code

For each size, a fresh clone of this repository with the working tree's changes copied in (as
`study_stages.py --uncommitted`), its params.yaml set to that many synthetic faces, `--image-size` px and
`--epochs` epochs, and every stage run by `dvc repro --single-item <stage>`, measured as study_stages.py
measures one: wall, CPU (user + system of the stage's process tree) and peak RSS (the tree's summed RSS,
sampled every 0.2 s). Each stage's growth exponent k (cost ~ N^k) is the least-squares slope of log cost on
log N. A stage's fixed cost (imports, ~8 s a process) pulls k below its asymptotic value at small N, so the
table also gives the ratio of the last two sizes' costs. On a busy machine wall times and their exponents are
upper bounds; CPU time is steadier. Figures go to --json after each size, so an interrupted run keeps them.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import yaml

from study_stages import StageCost, clone_repository, copy_changes, run_stage, stage_env, time_stages

MEASURES = (("wall_s", "wall s"), ("cpu_s", "CPU s"), ("peak_rss_mb", "peak RSS MiB"))


def set_size(params_file: Path, faces: int, image_size: int, epochs: int) -> None:
    params = yaml.safe_load(params_file.read_text())
    params["data"]["synthetic"]["n_faces"] = faces
    params["data"]["image_size"] = image_size
    params["train"]["max_epochs"] = epochs
    params_file.write_text(yaml.safe_dump(params, sort_keys=False))


def growth_exponent(sizes: list[int], costs: list[float]) -> float:
    """k of cost ~ N^k: the least-squares slope of log cost on log N."""
    return float(np.polyfit(np.log(sizes), np.log(costs), 1)[0])


def markdown_table(results: dict[int, list[StageCost]]) -> str:
    """One row per stage and measure: its cost at each size, the exponent and the last doubling's ratio."""
    sizes = sorted(results)
    stages = list(dict.fromkeys(cost.stage for size in sizes for cost in results[size]))
    head = ["stage", "measure", *(f"{n:,} faces" for n in sizes), "exponent k", "last ratio"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for stage in stages:
        by_size = {n: c for n in sizes for c in results[n] if c.stage == stage}
        measured = [n for n in sizes if n in by_size]
        for field, label in MEASURES:
            values = [getattr(by_size[n], field) for n in measured]
            cells = [f"{getattr(by_size[n], field):.0f}" if n in by_size else "-" for n in sizes]
            if len(measured) >= 2:
                ratio = f"{values[-1] / values[-2]:.2f} ({measured[-1] / measured[-2]:.3g}x faces)"
                exponent = f"{growth_exponent(measured, values):.2f}"
            else:
                ratio = exponent = "-"
            lines.append(f"| {stage} | {label} | " + " | ".join(cells) + f" | {exponent} | {ratio} |")
    return "\n".join(lines)


def load_results(path: Path) -> dict[int, list[StageCost]]:
    saved = json.loads(path.read_text())
    return {int(n): [StageCost(**cost) for cost in costs] for n, costs in saved.items()}


def save_results(path: Path | None, results: dict[int, list[StageCost]]) -> None:
    if path is not None:
        path.write_text(json.dumps({n: [asdict(c) for c in costs] for n, costs in sorted(results.items())}))


def rerun_stages(clone: Path, stages: list[str], earlier: list[StageCost]) -> list[StageCost]:
    """`stages` again in a kept clone (its code updated by the caller); the other stages' figures kept."""
    env = stage_env(clone, f"scale rerun {time.strftime('%Y-%m-%d %H:%M')}")
    costs = {cost.stage: cost for cost in earlier}
    for stage in stages:
        cost, returncode = run_stage(clone, stage, env, clone / "stage-logs" / f"{stage}.rerun.log")
        print(f"{clone.name} faces, {stage}: wall {cost.wall_s:.0f} s, CPU {cost.cpu_s:.0f} s, "
              f"peak RSS {cost.peak_rss_mb:.0f} MiB", flush=True)  # fmt: skip
        if returncode:
            raise SystemExit(f"stage {stage} failed (exit {returncode}) in {clone}")
        costs[stage] = cost
    return list(costs.values())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--faces", type=int, nargs="+", default=[1000, 2000, 4000, 8000])
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--json", type=Path, help="write the figures here (merged with what it holds) after each size")
    parser.add_argument("--table", type=Path, help="only print the table of figures saved by --json")
    parser.add_argument("--keep", type=Path, help="keep each size's clone under this folder (<folder>/<N>)")
    parser.add_argument("--rerun", nargs="+", metavar="STAGE", help="with --keep: only these stages, in the kept "
                        "clones, after copying the working tree's changes in again (and the sizes over them); "
                        "their figures replace the saved ones")
    args = parser.parse_args()
    if args.table:
        print(markdown_table(load_results(args.table)))
        return 0
    results = load_results(args.json) if args.json and args.json.exists() else {}
    if args.rerun:
        if args.keep is None:
            parser.error("--rerun needs --keep: the clones whose earlier stages it reuses")
        for faces in args.faces:
            clone = args.keep / str(faces)
            copy_changes(clone)
            set_size(clone / "params.yaml", faces, args.image_size, args.epochs)
            results[faces] = rerun_stages(clone, args.rerun, results.get(faces, []))
            save_results(args.json, results)
        print(markdown_table(results))
        return 0
    scratch = args.keep or Path(tempfile.mkdtemp(prefix="facetraits-scale-"))
    for faces in args.faces:
        clone = scratch / str(faces)
        clone_repository(clone, uncommitted=True)
        set_size(clone / "params.yaml", faces, args.image_size, args.epochs)
        print(f"--- {faces} faces, {args.image_size} px, {args.epochs} epoch(s): {clone}", flush=True)
        try:
            results[faces] = time_stages(clone, "dvc.yaml", f"scale {faces} faces {time.strftime('%Y-%m-%d %H:%M')}")
        finally:
            if args.keep is None:
                shutil.rmtree(clone, ignore_errors=True)
        save_results(args.json, results)
    if args.keep is None:
        shutil.rmtree(scratch, ignore_errors=True)
    print(markdown_table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
