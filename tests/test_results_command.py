"""`facetraits results`: the study's headline and, per attribute, every method's test r, read from the files."""

from __future__ import annotations

import json
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

    args = ["results", "--results", str(results), "--params", str(tmp_path / "params.yaml")]
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
    assert main(["results", "--results", str(tmp_path)]) == 1
    error = capsys.readouterr().err
    assert f"error: {tmp_path / 'report.json'}: metrics file not found; run the stage that writes it" in error
