"""The paper's protocol across nodes: torchrun / SLURM tasks each fit a slice of the attributes into the shared
models folder with `facetraits fit-attributes`, then one `dvc repro train` collects them without fitting again."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.dvc_project import copy_project, dvc, dvc_env

pytestmark = pytest.mark.slow

ATTRIBUTES = ["happy", "dominant", "trustworthy"]
CHANGES = {
    "data": {"image_size": 32, "synthetic": {"n_faces": 40}, "attributes": ATTRIBUTES},
    "model": {"head_hidden": 16, "trainable_blocks": 1},
    "train": {"protocol": "per_attribute", "max_epochs": 1, "batch_size": 16, "progress_bar": False, "attribute_workers": 1},
    "tracking": {"system_metrics_s": 0},
}


def test_two_slurm_tasks_fit_disjoint_slices_and_the_train_stage_only_collects(tmp_path: Path) -> None:
    project = copy_project(tmp_path / "project", CHANGES, tmp_path)
    prepared = dvc(project, "repro", "prepare")
    assert prepared.returncode == 0, prepared.stderr + prepared.stdout
    # SLURM detection in Lightning would take each task for a DDP rank: the command must detach its fits from it
    tasks = [
        subprocess.Popen(
            [sys.executable, "-m", "facetraits.cli", "fit-attributes"], cwd=project, text=True,
            env={**dvc_env(), "SLURM_PROCID": str(rank), "SLURM_NTASKS": "2", "SLURM_JOB_NAME": "facetraits"},
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        for rank in range(2)
    ]
    outputs = [task.communicate(timeout=300) for task in tasks]
    assert [task.returncode for task in tasks] == [0, 0], outputs
    assert "task 0 of 2: 2 attribute(s)" in outputs[0][0] and "happy, trustworthy" in outputs[0][0]
    assert "task 1 of 2: 1 attribute(s)" in outputs[1][0] and "dominant" in outputs[1][0]
    stamps = {a: (project / "models" / a / "best.ckpt").stat().st_mtime_ns for a in ATTRIBUTES}
    records = {a: json.loads((project / "models" / a / "fit.json").read_text()) for a in ATTRIBUTES}

    collected = dvc(project, "repro", "train")
    assert collected.returncode == 0, collected.stderr + collected.stdout
    assert {a: (project / "models" / a / "best.ckpt").stat().st_mtime_ns for a in ATTRIBUTES} == stamps, "refitted"
    metrics = json.loads((project / "results/train/metrics.json").read_text())
    for attribute in ATTRIBUTES:
        assert metrics["test"]["pearson"][attribute] == pytest.approx(records[attribute]["test"][f"test/pearson/{attribute}"], abs=1e-6)
    assert "trained 3 model(s) on 3 attribute(s)" in collected.stdout + collected.stderr


def test_a_rank_outside_the_tasks_or_a_bad_task_count_is_named_before_any_work(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "facetraits.cli", "fit-attributes", "--rank", "2", "--world", "2",
         "--prepared", str(tmp_path / "none")],
        cwd=tmp_path, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    assert done.returncode == 1 and "error: task rank 2 of 2 tasks: the rank must be in 0..1" in done.stderr
    slurm = subprocess.run(
        [sys.executable, "-m", "facetraits.cli", "fit-attributes"], cwd=tmp_path, capture_output=True, text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "SLURM_PROCID": "0", "SLURM_NTASKS": "two"},
        timeout=120,
    )  # fmt: skip
    assert slurm.returncode == 1 and "$SLURM_NTASKS='two'" in slurm.stderr
