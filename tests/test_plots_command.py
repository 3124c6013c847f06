"""`facetraits plots` when DVC writes no page: one `error:` line with DVC's reason and exit 1, never a traceback."""

from __future__ import annotations

import subprocess
from pathlib import Path

from facetraits import views
from facetraits.cli import main

DVC_SAID = "DVC failed to load some plots for following revisions: 'workspace'."


def test_plots_without_a_page_is_one_error_line_naming_dvcs_reason(tmp_path: Path, monkeypatch, capsys) -> None:
    """DVC exits 0 when it cannot load a plot's files, and then may write no index.html at all."""
    called = []

    def dvc_writing_nothing(args: list[str], **kwargs) -> subprocess.CompletedProcess[str]:
        called.append(args)
        return subprocess.CompletedProcess(args, 0, stdout="", stderr=f"{DVC_SAID}\n")

    monkeypatch.setattr(views.subprocess, "run", dvc_writing_nothing)
    assert main(["plots", "--out", str(tmp_path / "page")]) == 1
    (args,) = called
    assert args[1:5] == ["-m", "dvc", "plots", "show"] and args[-2:] == ["-o", str(tmp_path / "page")]
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.splitlines() == [
        f"error: dvc plots show wrote no {tmp_path / 'page' / 'index.html'} (run the stages that write the plots: "
        f"dvc repro); DVC said: {DVC_SAID}"
    ]
