"""The `facetraits` command: checks and tools around the DVC stages."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import yaml

from facetraits import __version__
from facetraits.config import load_params
from facetraits.errors import FaceTraitsError


def _check_params(args: argparse.Namespace) -> int:
    params = load_params(args.params)
    print(yaml.safe_dump(dataclasses.asdict(params), sort_keys=False), end="")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="facetraits", description="How people judge faces, reproducibly.")
    parser.add_argument("--version", action="version", version=f"facetraits {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser("check-params", help="validate params.yaml and print it with every default filled in")
    check.add_argument("params", type=Path, nargs="?", default=Path("params.yaml"))
    check.set_defaults(run=_check_params)
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except FaceTraitsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
