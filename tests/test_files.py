import json
import os
import re
from pathlib import Path

import pytest

from facetraits.errors import OutputError
from facetraits.files import atomic_directory, atomic_write_json, atomic_write_text, ready_outputs


def test_atomic_write_replaces_whole_file(tmp_path: Path) -> None:
    target = tmp_path / "out" / "metrics.json"
    atomic_write_json(target, {"r": 0.5})
    assert json.loads(target.read_text()) == {"r": 0.5}
    assert oct(target.stat().st_mode & 0o777) == oct(0o644)
    assert os.listdir(target.parent) == ["metrics.json"]


def test_failed_write_keeps_the_previous_file(tmp_path: Path) -> None:
    target = tmp_path / "metrics.json"
    atomic_write_text(target, "old")
    with pytest.raises(ValueError):
        atomic_write_json(target, {"r": float("nan")})
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["metrics.json"]


def test_directory_swapped_only_on_success(tmp_path: Path) -> None:
    target = tmp_path / "prepared"
    with atomic_directory(target) as tmp:
        (tmp / "a.txt").write_text("first")
    with pytest.raises(RuntimeError):
        with atomic_directory(target) as tmp:
            (tmp / "a.txt").write_text("half")
            raise RuntimeError("stage failed")
    assert (target / "a.txt").read_text() == "first"
    assert sorted(os.listdir(tmp_path)) == ["prepared"]
    with atomic_directory(target) as tmp:
        (tmp / "b.txt").write_text("second")
    assert sorted(os.listdir(target)) == ["b.txt"]
    assert oct(target.stat().st_mode & 0o777) == oct(0o755)


def test_ready_outputs_removes_what_a_killed_run_left(tmp_path: Path) -> None:
    prepared, summary = tmp_path / "data" / "prepared", tmp_path / "results" / "prepare.json"
    with atomic_directory(prepared) as tmp:
        (tmp / "faces.csv").write_text("kept")
    leftovers = [
        tmp_path / "data" / ".prepared.k1ll3d.tmp" / "images.npy",  # atomic_directory's folder
        tmp_path / "results" / ".prepare.json.abc123.tmp",  # atomic_path's file
        prepared / "figures" / ".gallery.png.xyz.tmp",  # an atomic write inside an output folder
    ]
    for leftover in leftovers:
        leftover.parent.mkdir(parents=True, exist_ok=True)
        leftover.write_text("half")
    (tmp_path / "data" / ".other.abc.tmp").write_text("not ours")
    ready_outputs(prepared, summary)
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file()) == [
        "data/.other.abc.tmp", "data/prepared/faces.csv"
    ]


def test_ready_outputs_brings_back_an_output_moved_aside_by_a_killed_swap(tmp_path: Path) -> None:
    target = tmp_path / "explain"
    aside = tmp_path / ".explain.old-12345.tmp"
    aside.mkdir()
    (aside / "scores.json").write_text("previous")
    ready_outputs(target)
    assert (target / "scores.json").read_text() == "previous" and os.listdir(tmp_path) == ["explain"]


def test_ready_outputs_names_an_output_that_cannot_be_written(tmp_path: Path) -> None:
    # A folder that is a regular file blocks even root (chmod would not).
    (tmp_path / "results").write_text("a file, not a folder")
    target = tmp_path / "results" / "train" / "metrics.json"
    message = f"{target}: cannot write this output: {tmp_path / 'results'} is a file, not a folder"
    with pytest.raises(OutputError, match=re.escape(message)):
        ready_outputs(target)
