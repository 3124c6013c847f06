"""The torch-free list of backbones: what config validates against and the report names, and what builds."""

from __future__ import annotations

import subprocess
import sys

from facetraits.models.backbone_labels import BACKBONE_LABELS
from facetraits.models.components.backbones import _ARCHITECTURES


def test_every_listed_backbone_builds_and_every_buildable_one_is_listed() -> None:
    assert set(BACKBONE_LABELS) == set(_ARCHITECTURES)


def test_reading_params_and_the_report_import_no_torch() -> None:
    """Stages without a model (prepare, baselines, report) validate model.backbone; torch costs them ~3 s each."""
    probe = (
        "import sys; from facetraits.config import parse_params; import facetraits.report.study;"
        "parse_params({'model': {'backbone': 'resnet18'}});"
        "print(sorted({'torch', 'torchvision'} & set(sys.modules)))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.splitlines()[-1] == "[]"
