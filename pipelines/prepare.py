"""DVC stage `prepare`: decode the configured source into data/prepared and log it to MLflow."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from facetraits.config import load_params
from facetraits.data.prepare import prepare_dataset
from facetraits.data.prepared import load_prepared
from facetraits.errors import FaceTraitsError
from facetraits.files import atomic_write_json, ready_outputs
from facetraits.gallery import sample_gallery
from facetraits.tracking import TAG_FINGERPRINT, flatten_params, stage_run

GALLERY_FACES = 32


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--out", type=Path, default=Path("data/prepared"))
    parser.add_argument("--summary", type=Path, default=Path("results/prepare.json"))
    args = parser.parse_args(argv)
    try:
        params = load_params(args.params)
        ready_outputs(args.out, args.summary)
        with stage_run(params.tracking, "prepare", flatten_params(params.data, prefix="data.")) as run:
            report = prepare_dataset(params.data, args.out)
            atomic_write_json(args.summary, report.metrics())
            run.set_tags({TAG_FINGERPRINT: report.fingerprint})
            run.log_metrics(report.tracked_metrics())
            run.log_text(report.skipped_table(), "prepare/skipped.tsv")
            gallery = sample_gallery(load_prepared(args.out).images, GALLERY_FACES, params.data.seed)
            run.log_image(gallery, "prepare/gallery.png")
    except FaceTraitsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(
        f"prepared {report.n_faces} faces ({report.split_counts}) from '{report.source}' in {report.seconds:.1f} s "
        f"({report.n_faces / report.seconds:.0f} images/s), {len(report.skipped)} skipped -> {args.out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
