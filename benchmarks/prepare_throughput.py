"""Prepare-stage throughput and peak memory.

    python benchmarks/prepare_throughput.py --source synthetic --faces 10000 --size 128
    python benchmarks/prepare_throughput.py --source omi --path ../shared/datasets/omi --size 128

Peak memory is the largest resident set of the main process and of any decoding worker.
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

from facetraits.config import parse_params
from facetraits.data.prepare import prepare_dataset, worker_count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", default="synthetic")
    parser.add_argument("--path", default="data/raw")
    parser.add_argument("--faces", type=int, default=10_000, help="synthetic faces")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--workers", type=int, default=0)
    args = parser.parse_args()
    params = parse_params(
        {
            "data": {
                "source": args.source,
                "path": args.path,
                "image_size": args.size,
                "workers": args.workers,
                "synthetic": {"n_faces": args.faces},
            }
        }
    ).data
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        report = prepare_dataset(params, Path(tmp) / "prepared", progress=False)
        seconds = time.perf_counter() - started
    main_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    worker_rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(
        f"{args.source}: {report.n_faces} faces at {args.size}px with {worker_count(args.workers)} workers in "
        f"{seconds:.2f} s = {report.n_faces / seconds:.0f} images/s; "
        f"peak RSS main {main_rss:.0f} MiB, largest worker {worker_rss:.0f} MiB"
    )


if __name__ == "__main__":
    main()
