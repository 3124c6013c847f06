"""`facetraits results`: a study's headline and, per attribute, every method's test r, read from the files; several
study folders side by side; fast, because it imports no torch, MLflow or DVC."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

from facetraits.cli import main

HEADLINE = {"p": {"anova": 0.0123, "friedman": None},
            "test_r_mean": {"main": 0.652, "probe": 0.515, "handcrafted": 0.805, "human_ceiling": 0.985}}  # fmt: skip


def _write(path: Path, content: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(content))


def test_results_prints_the_headline_and_the_per_attribute_table(tmp_path: Path, capsys) -> None:
    results = tmp_path / "results"
    _write(results / "report.json", HEADLINE)
    _write(results / "train" / "metrics.json", {"test": {"pearson": {"happy": 0.9, "dominant": 0.404}}})
    _write(results / "variants" / "probe" / "metrics.json", {"test": {"pearson": {"happy": 0.7, "dominant": 0.33}}})
    human = {"reliability": {"happy": 0.98, "dominant": 0.96}, "ceiling": {"happy": 0.99, "dominant": 0.9798}}
    _write(results / "baselines" / "metrics.json",
           {"handcrafted": {"test": {"pearson": {"happy": 0.8, "dominant": None}}}, "human": human})  # fmt: skip
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"variants": {"probe": {"train": {"protocol": "probe"}}}}))

    args = ["results", str(tmp_path)]
    assert main(args) == 0
    headline = capsys.readouterr().out.splitlines()
    assert headline[0] == str(results / "report.json")
    assert [line.split() for line in headline[1:]] == [
        ["test_r_mean.main", "0.652"], ["test_r_mean.probe", "0.515"], ["test_r_mean.handcrafted", "0.805"],
        ["test_r_mean.human_ceiling", "0.985"], ["p.anova", "0.012"], ["p.friedman", "—"],
    ]  # fmt: skip

    assert main([*args, "--per-attribute"]) == 0
    table = capsys.readouterr().out.split("\n\n")[1].splitlines()
    assert table[0].split() == ["human_ceiling", "handcrafted", "main", "probe"]
    assert table[1].split() == ["test", "Pearson", "r"]
    assert table[2].split() == ["happy", "0.990", "0.800", "0.900", "0.700"]
    assert table[3].split() == ["dominant", "0.980", "—", "0.404", "0.330"]


def test_results_without_a_headline_names_the_file_and_the_command(tmp_path: Path, capsys) -> None:
    assert main(["results", str(tmp_path)]) == 1
    error = capsys.readouterr().err
    headline = tmp_path / "results" / "report.json"
    assert f"error: {headline}: metrics file not found; run the stage that writes it" in error


def test_results_of_two_studies_is_one_table_with_a_column_per_study(tmp_path: Path, capsys, monkeypatch) -> None:
    """Keys one study lacks (its variant's name) show as — in its column, beside the other methods' rows."""
    _write(tmp_path / "results" / "report.json", HEADLINE)
    omi = {"test_r_mean": {"main": 0.796, "probe": 0.715, "handcrafted": 0.67}, "p": {"anova": 0.0}}
    _write(tmp_path / "studies" / "omi" / "results" / "report.json", omi)
    monkeypatch.chdir(tmp_path)
    assert main(["results", ".", "studies/omi"]) == 0
    assert [line.split() for line in capsys.readouterr().out.splitlines()] == [
        [".", "studies/omi"],
        ["test_r_mean.main", "0.652", "0.796"], ["test_r_mean.probe", "0.515", "0.715"],
        ["test_r_mean.handcrafted", "0.805", "0.670"], ["test_r_mean.human_ceiling", "0.985", "—"],
        ["p.anova", "0.012", "0.000"], ["p.friedman", "—", "—"],
    ]  # fmt: skip


def test_results_imports_no_heavy_library(tmp_path: Path) -> None:
    """Printing a JSON file must not import torch, MLflow, DVC or pandas (~10 s on a 2-core CPU)."""
    _write(tmp_path / "results" / "report.json", HEADLINE)
    probe = (
        "import sys; from facetraits.cli import main; main(['results', sys.argv[1]]);"
        "print(sorted({'torch', 'mlflow', 'dvc', 'pandas', 'lightning'} & set(sys.modules)))"
    )
    done = subprocess.run([sys.executable, "-c", probe, str(tmp_path)], capture_output=True, text=True, check=True)
    assert done.stdout.splitlines()[-1] == "[]"


def test_a_reader_that_stops_early_ends_the_command_quietly(tmp_path: Path) -> None:
    """`facetraits results | head`: the pipe closes before the output is written; no traceback, no noise."""
    _write(tmp_path / "results" / "report.json", HEADLINE)
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before the first line
    command = [sys.executable, "-m", "facetraits.cli", "results", str(tmp_path)]
    done = subprocess.run(command, stdout=write_end, stderr=subprocess.PIPE, text=True, check=False, timeout=60)
    os.close(write_end)
    assert done.returncode == 1 and done.stderr == "", done.stderr
