"""What a stage's library call hands back: kept free of MLflow and torch imports, so library modules that
worker processes import stay light."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from facetraits.tracking import StageRun


@dataclass(frozen=True)
class StageResult:
    """What a stage's library call hands back for the stage contract (facetraits.stage) to log and print."""

    summary: str
    metrics: Mapping[str, float | None] = dataclasses.field(default_factory=dict)
    artifacts: Sequence[tuple[Path, str | None]] = ()  # a file or a folder, and where in the run it goes
    tags: Mapping[str, str] = dataclasses.field(default_factory=dict)
    texts: Mapping[str, str] = dataclasses.field(default_factory=dict)  # artifact file -> text
    images: Mapping[str, np.ndarray] = dataclasses.field(default_factory=dict)  # artifact file -> image
    fingerprint: str | None = None  # of the data a stage wrote (prepare); the others' comes from what they read
    model_id: str | None = None  # the LoggedModel the metrics score (the Models tab shows them beside it)

    def log_to(self, run: StageRun) -> None:
        if self.tags:
            run.set_tags(self.tags)
        run.log_metrics(self.metrics, model_id=self.model_id)
        for path, folder in self.artifacts:
            (run.log_artifacts if Path(path).is_dir() else run.log_artifact)(Path(path), folder)
        for artifact_file, text in self.texts.items():
            run.log_text(text, artifact_file)
        for artifact_file, image in self.images.items():
            run.log_image(image, artifact_file)
