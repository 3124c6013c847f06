"""Atomic outputs: a stage either leaves its previous output or the complete new one, never a mix."""

from __future__ import annotations

import glob
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from facetraits.errors import OutputError

# Every temporary entry below is a hidden sibling `.<name>.<anything>.tmp`: what a killed run can leave behind.
_LEFTOVER = ".{name}.*.tmp"

# mkstemp/mkdtemp create private (0600/0700) entries; outputs get the usual public modes.
_FILE_MODE = 0o644
_DIR_MODE = 0o755


@contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temporary sibling path; on success it replaces `target`, on error it is removed."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, _FILE_MODE)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_text(target: Path, text: str) -> None:
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")


def atomic_write_json(target: Path, payload: Any) -> None:
    atomic_write_text(target, json.dumps(payload, indent=2, sort_keys=True, allow_nan=False) + "\n")


@contextmanager
def atomic_directory(target: Path) -> Iterator[Path]:
    """Yield an empty temporary sibling directory that replaces `target` only if the block succeeds."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        yield tmp
        os.chmod(tmp, _DIR_MODE)
        previous = None
        if target.exists():
            previous = target.with_name(f".{target.name}.old-{os.getpid()}.tmp")
            os.replace(target, previous)
        os.replace(tmp, target)
        if previous is not None:
            shutil.rmtree(previous)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def ready_outputs(*targets: Path) -> None:
    """Called as a stage starts: fail now, naming the output, if one cannot be written (not after hours of work),
    and clear what a killed earlier run left: its temporary entries beside or inside the outputs go, and an output
    it had moved aside inside atomic_directory's swap comes back."""
    for target in map(Path, targets):
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, probe = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
            os.close(fd)
            os.unlink(probe)
        except OSError as exc:
            blocking = next((a for a in target.parents if a.exists() and not a.is_dir()), None)
            reason = f"{blocking} is a file, not a folder" if blocking else (exc.strerror or str(exc))
            raise OutputError(f"{target}: cannot write this output: {reason}") from None
        leftovers = list(target.parent.glob(_LEFTOVER.format(name=glob.escape(target.name))))
        previous = [p for p in leftovers if p.name.startswith(f".{target.name}.old-")]
        if previous and not target.exists():  # killed inside atomic_directory's swap: the previous output is whole
            os.replace(previous[0], target)
        if target.is_dir() and not target.is_symlink():
            leftovers += list(target.rglob(".*.tmp"))
        for leftover in sorted(leftovers, key=lambda p: len(p.parts)):
            _remove(leftover)
