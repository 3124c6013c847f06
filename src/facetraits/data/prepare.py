"""The prepare stage: every face decoded once into a memory-mappable array, with its table and ratings.

Output folder (replaced atomically, so a failed run leaves the previous one intact):
  images.npy       uint8 (N, S, S, 3), np.load(..., mmap_mode="r")
  faces.csv        id, source_file, group, split, one mean-rating column per attribute
  ratings.csv.gz   every single rating (id, attribute, rating, rater, rating_type), when the source has them
  masks.npy        sources with ground truth (synthetic): uint8 (N, S, S) region bitfield, see meta.json "regions"
  factors.csv      sources with ground truth (synthetic): the latent factors behind each face
  meta.json        source, attributes, scale (other_scales: attributes on another), size, counts, skipped images,
                   fingerprint
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import multiprocessing
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm import tqdm

from facetraits.batching import batches
from facetraits.config import DataParams
from facetraits.data.prepared import (
    FACES_FILE,
    FACTORS_FILE,
    IMAGES_FILE,
    MASKS_FILE,
    META_FILE,
    RATINGS_FILE,
    load_prepared,
)
from facetraits.data.sources import open_source
from facetraits.data.sources.base import FaceJob
from facetraits.data.split import SPLITS, assign_splits
from facetraits.errors import DataError
from facetraits.files import atomic_directory, atomic_write_json
from facetraits.gallery import sample_gallery
from facetraits.numbers import json_number
from facetraits.stage_result import StageResult

CHUNK = 64
GALLERY_FACES = 32


@dataclass(frozen=True)
class SkippedImage:
    id: str
    source_file: str
    reason: str


@dataclass(frozen=True)
class PrepareReport:
    source: str
    attributes: tuple[str, ...]
    scale: tuple[float, float]
    image_size: int
    n_faces: int
    split_counts: dict[str, int]
    n_ratings: int | None
    attribute_stats: dict[str, dict[str, float | int | None]]
    skipped: tuple[SkippedImage, ...]
    fingerprint: str
    seconds: float = field(compare=False)

    def metrics(self) -> dict[str, Any]:
        """What DVC tracks as metrics: deterministic for a seed, so no timings."""
        return {
            "source": self.source,
            "n_faces": self.n_faces,
            "n_skipped": len(self.skipped),
            "n_ratings": self.n_ratings,
            "splits": self.split_counts,
            "attributes": self.attribute_stats,
            "fingerprint": self.fingerprint,
        }

    def tracked_metrics(self) -> dict[str, float]:
        """Flat MLflow metrics: counts, throughput and per-attribute mean/std/missing."""
        metrics: dict[str, float] = {
            "data/n_faces": self.n_faces,
            "data/n_skipped": len(self.skipped),
            "data/images_per_second": (self.n_faces + len(self.skipped)) / max(self.seconds, 1e-9),
            **{f"data/n_{split}": count for split, count in self.split_counts.items()},
        }
        if self.n_ratings is not None:
            metrics["data/n_ratings"] = self.n_ratings
        for attribute, stats in self.attribute_stats.items():
            metrics.update({f"data/{name}/{attribute}": v for name, v in stats.items() if v is not None})
        return metrics

    def skipped_table(self) -> str:
        lines = ["id\tsource_file\treason"] + [f"{s.id}\t{s.source_file}\t{s.reason}" for s in self.skipped]
        return "\n".join(lines) + "\n"


def _decode_chunk(
    job: tuple[FaceJob, Path, Path | None, int, Sequence[Any]],
) -> tuple[int, list[tuple[int, str]]]:
    """Write one chunk of faces straight into the shared memory-mapped outputs."""
    make_face, images_path, masks_path, start, items = job
    images = np.load(images_path, mmap_mode="r+")
    masks = np.load(masks_path, mmap_mode="r+") if masks_path is not None else None
    failures = []
    for offset, item in enumerate(items):
        try:
            image, mask = make_face(item)
        except DataError as exc:
            failures.append((start + offset, str(exc)))
            continue
        images[start + offset] = image
        if masks is not None:
            masks[start + offset] = mask
    images.flush()
    if masks is not None:
        masks.flush()
    return len(items), failures


def worker_count(requested: int) -> int:
    return requested or len(os.sched_getaffinity(0))


def _run_chunks(
    jobs: list[tuple[FaceJob, Path, Path | None, int, Sequence[Any]]],
    workers: int,
    stop_on_failure: bool,
    progress: bool,
) -> list[tuple[int, str]]:
    """Decode every chunk (in worker processes when more than one), returning failures by row."""
    failures: list[tuple[int, str]] = []
    total = sum(len(job[4]) for job in jobs)
    with tqdm(total=total, desc="prepare", unit="img", disable=not progress, mininterval=1.0) as bar:

        def consume(results: Iterator[tuple[int, list[tuple[int, str]]]]) -> None:
            for done, chunk_failures in results:
                bar.update(done)
                failures.extend(chunk_failures)
                if failures and stop_on_failure:
                    return

        if workers <= 1 or len(jobs) <= 1:
            consume(map(_decode_chunk, jobs))
        else:
            with multiprocessing.get_context("fork").Pool(workers) as pool:
                consume(pool.imap_unordered(_decode_chunk, jobs))
    return sorted(failures)


def _compact(path: Path, keep: np.ndarray) -> None:
    """Drop skipped rows from an .npy file, streaming in chunks."""
    source = np.load(path, mmap_mode="r")
    tmp = path.with_suffix(".compact.npy")
    target = np.lib.format.open_memmap(tmp, mode="w+", dtype=source.dtype, shape=(len(keep),) + source.shape[1:])
    for part in batches(len(keep), 512):
        target[part] = source[keep[part]]
    target.flush()
    del source, target
    os.replace(tmp, path)


def _require_rated_faces(faces: pd.DataFrame, attributes: Sequence[str], source: str) -> None:
    """Training standardizes each attribute by its train-split ratings: an attribute needs some there."""
    train = faces["split"] == "train"
    unrated = [a for a in attributes if faces.loc[train, a].notna().sum() == 0]
    if unrated:
        raise DataError(
            f"data.source '{source}': attribute(s) {unrated} have no rated face in the train split; "
            "leave them out of data.attributes"
        )


def _write_csv_gz(table: pd.DataFrame, path: Path) -> None:
    """Gzip with no timestamp or file name in the header, so equal tables give equal bytes."""
    with open(path, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=3) as packed:
        with io.TextIOWrapper(packed, encoding="utf-8", newline="") as text:
            table.to_csv(text, index=False)


def fingerprint_files(paths: Sequence[Path]) -> str:
    digest = hashlib.sha256()
    for path in sorted(paths, key=lambda p: p.name):
        with open(path, "rb") as handle:
            digest.update(f"{path.name}:{hashlib.file_digest(handle, 'sha256').hexdigest()}\n".encode())
    return digest.hexdigest()


def _attribute_stats(faces: pd.DataFrame, attributes: Sequence[str]) -> dict[str, dict[str, float | int | None]]:
    return {
        a: {"mean": json_number(faces[a].mean()), "std": json_number(faces[a].std()), "missing": int(faces[a].isna().sum())}
        for a in attributes
    }


def prepare_dataset(params: DataParams, out_dir: Path, progress: bool = True) -> PrepareReport:
    """Read the source, decode every face once, split, and write the prepared folder atomically."""
    started = time.perf_counter()
    size = params.image_size
    source = open_source(params)
    table, items, truth = source.table, source.items, source.ground_truth
    faces = table.faces
    n = len(faces)
    if n == 0:
        raise DataError(f"data.source '{params.source}': the faces table at {params.path} has no rows")

    with atomic_directory(Path(out_dir)) as tmp:
        images_path = tmp / IMAGES_FILE
        np.lib.format.open_memmap(images_path, mode="w+", dtype=np.uint8, shape=(n, size, size, 3)).flush()
        masks_path = None
        if truth is not None:
            masks_path = tmp / MASKS_FILE
            np.lib.format.open_memmap(masks_path, mode="w+", dtype=np.uint8, shape=(n, size, size)).flush()
        jobs = [(source.make_face, images_path, masks_path, part.start, items[part]) for part in batches(n, CHUNK)]
        failures = _run_chunks(jobs, worker_count(params.workers), params.on_bad_image == "error", progress)
        if failures and params.on_bad_image == "error":
            listed = "\n  ".join(reason for _, reason in failures[:5])
            raise DataError(
                f"{len(failures)} bad image(s) (set data.on_bad_image: skip to leave them out):\n  {listed}"
            )
        skipped = tuple(
            SkippedImage(str(faces["id"].iloc[i]), str(faces["source_file"].iloc[i]), reason) for i, reason in failures
        )
        if skipped:
            keep = np.setdiff1d(np.arange(n), [i for i, _ in failures])
            if len(keep) == 0:
                raise DataError(f"every image of data.source '{params.source}' failed to decode; first: {failures[0][1]}")
            for path in (images_path, masks_path):
                if path is not None:
                    _compact(path, keep)
            faces = faces.iloc[keep].reset_index(drop=True)
            if truth is not None:
                truth = replace(truth, factors=truth.factors.iloc[keep].reset_index(drop=True))

        faces.insert(3, "split", assign_splits(faces["group"].tolist(), params.split.fractions, params.seed))
        _require_rated_faces(faces, table.attributes, params.source)
        faces.to_csv(tmp / FACES_FILE, index=False)
        written = [images_path, tmp / FACES_FILE]
        ratings = table.ratings
        if ratings is not None:
            ratings = ratings[ratings["id"].isin(faces["id"])].reset_index(drop=True)
            _write_csv_gz(ratings, tmp / RATINGS_FILE)
            written.append(tmp / RATINGS_FILE)
        if truth is not None and masks_path is not None:
            pd.concat([faces[["id"]], truth.factors], axis=1).to_csv(tmp / FACTORS_FILE, index=False)
            written += [masks_path, tmp / FACTORS_FILE]

        report = PrepareReport(
            source=params.source,
            attributes=table.attributes,
            scale=table.scale,
            image_size=size,
            n_faces=len(faces),
            split_counts={s: int((faces["split"] == s).sum()) for s in SPLITS},
            n_ratings=None if ratings is None else len(ratings),
            attribute_stats=_attribute_stats(faces, table.attributes),
            skipped=skipped,
            fingerprint=fingerprint_files(written),
            seconds=time.perf_counter() - started,
        )
        meta = {key: value for key, value in asdict(report).items() if key != "seconds"}
        if table.other_scales:
            meta["other_scales"] = {a: list(scale) for a, scale in table.other_scales.items() if a in table.attributes}
        if truth is not None:
            meta["regions"] = list(truth.regions)
            meta["attribute_regions"] = {a: list(truth.attribute_regions[a]) for a in table.attributes}
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return report


def prepare_stage(params: DataParams, out_dir: Path, summary: Path) -> StageResult:
    """The prepare stage: the prepared folder, its summary JSON, and a gallery and skipped-image list to log."""
    report = prepare_dataset(params, out_dir)
    atomic_write_json(summary, report.metrics())
    gallery = sample_gallery(load_prepared(out_dir).images, GALLERY_FACES, params.seed)
    line = (
        f"prepared {report.n_faces} faces ({report.split_counts}) from '{report.source}' in {report.seconds:.1f} s "
        f"({report.n_faces / report.seconds:.0f} images/s), {len(report.skipped)} skipped -> {out_dir}"
    )
    return StageResult(
        summary=line,
        metrics=report.tracked_metrics(),
        texts={"prepare/skipped.tsv": report.skipped_table()},
        images={"prepare/gallery.png": gallery},
        fingerprint=report.fingerprint,
    )
