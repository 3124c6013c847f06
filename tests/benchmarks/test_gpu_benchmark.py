"""benchmarks/gpu.py is meant for a GPU node; a tiny CPU run keeps every section working until one is used."""

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO


@pytest.mark.slow
def test_tiny_cpu_run_measures_every_section(tmp_path) -> None:
    out = tmp_path / "gpu.json"
    command = [sys.executable, str(REPO / "benchmarks" / "gpu.py"), "--size", "32", "--faces", "40", "--batch", "8",
               "--backbone", "resnet18", "--steps", "1", "--raw-steps", "1", "--workers", "0", "--explain-batch", "2",
               "--cpu-ddp", "2", "--json", str(out)]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=900, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    sections = {section["section"]: section for section in json.loads(out.read_text())}
    printed = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert [s["section"] for s in printed] == ["train", "ddp", "explain", "total"] == list(sections)
    train, ddp, explain = sections["train"], sections["ddp"], sections["explain"]
    for mode in ("fp32", "bf16_channels_last"):
        for figure in ("pipeline_images_per_s", "raw_images_per_s", "pipeline_peak_memory_mb", "raw_peak_memory_mb"):
            assert train[f"{mode}_{figure}"] > 0, (mode, figure)
    assert train["goal_met"] is False  # a CPU at 32 px does not count towards the GPU goal
    assert ddp["devices"] == 2 and ddp["images_per_s"] > 0 and ddp["scaling"] > 0 and ddp["peak_memory_mb_rank0"] > 0
    for method in ("gradcam", "guided_gradcam", "integrated_gradients", "gradient_shap", "saliency", "smoothgrad"):
        assert explain[f"{method}_maps_per_s"] > 0, method
    assert explain["peak_memory_mb"] > 0 and sections["total"]["seconds"] > 0
