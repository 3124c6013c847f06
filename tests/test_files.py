import json
import os
from pathlib import Path

import pytest

from facetraits.files import atomic_directory, atomic_write_json, atomic_write_text


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
