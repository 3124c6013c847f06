"""How much each face region moves each attribute's prediction: region occlusion over the mean faces, as a table.

The faces are the explain stage's mean sample (the same for every attribute and model), so the main model and any
variant (the fused probe, whose dlib features have no gradient) are compared on the same faces.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from facetraits.batching import batches
from facetraits.config import ExplainParams
from facetraits.data.prepared import PreparedData
from facetraits.explain.maps import image_batch
from facetraits.explain.methods import build_method
from facetraits.explain.methods.region_occlusion import RegionOcclusion
from facetraits.explain.regions import REGIONS, FaceRegions
from facetraits.explain.scores.spread import mean_interval
from facetraits.explain.study import mean_defined
from facetraits.models.components.net import FaceTraitsNet

TABLE_FILE = "region_importance.csv"
FIGURE_FILE = "region_importance.png"


@dataclass(frozen=True)
class RegionImportance:
    """One model's and attribute's drops: (faces, len(REGIONS)) in standardized units, NaN where a face lacks a
    region; `rows`: the faces, in the prepared data."""

    model: str
    attribute: str
    rows: np.ndarray
    drops: np.ndarray


def region_importance(
    net: FaceTraitsNet, data: PreparedData, rows: np.ndarray, attributes: Sequence[str], regions: FaceRegions,
    params: ExplainParams, model: str, show_progress: bool = True, precision: str = "32-true",
) -> list[RegionImportance]:  # fmt: skip
    """Each attribute's region drops over the faces at `rows`, `batch_size` faces at a time (one set of forward
    passes for every attribute, in `precision`: the study's)."""
    device = next(net.parameters()).device
    method = build_method(RegionOcclusion.name, net, params, regions, precision)
    assert isinstance(method, RegionOcclusion)
    targets, parts = [net.attributes.index(attribute) for attribute in attributes], []
    with tqdm(total=len(rows), desc=f"regions ({model})", unit="face", disable=not show_progress) as bar:
        for part in batches(len(rows), params.batch_size):
            chunk = rows[part]
            parts.append(method.region_drops(image_batch(data.images, chunk, device), targets, chunk.tolist()))
            bar.update(len(chunk))
    drops = np.concatenate(parts, axis=1)
    return [RegionImportance(model, attribute, rows, drops[i]) for i, attribute in enumerate(attributes)]


def region_table(importances: Sequence[RegionImportance], regions: FaceRegions, params: ExplainParams) -> pd.DataFrame:
    """A row per model, attribute and region: `importance` is the mean |drop| (how much the model relies on the
    region), `mean_drop` the signed mean (whether the region raises the prediction on average), each with its
    bootstrap interval over faces; `area` the region's mean share of the image; `undetected`: faces of the sample
    dlib found no face in (their regions are placed in the whole image)."""
    records = []
    for found in importances:
        labels = regions(found.rows)
        area = np.stack([(labels == index).mean(axis=(1, 2)) for index in range(len(REGIONS))], axis=1).mean(axis=0)
        undetected = len(regions.undetected.intersection(found.rows.tolist()))
        for index, region in enumerate(REGIONS):
            drops, interval = found.drops[:, index], {}
            for name, values in (("importance", np.abs(drops)), ("mean_drop", drops)):
                low, high = mean_interval([values], params.confidence, params.bootstrap_resamples, params.seed)
                interval |= {name: mean_defined(values), f"{name}_ci_low": low, f"{name}_ci_high": high}
            records.append({
                "model": found.model, "attribute": found.attribute, "region": region, **interval,
                "area": float(area[index]), "faces": int(np.isfinite(drops).sum()), "undetected": undetected,
                "regions_from": regions.source,
            })  # fmt: skip
    return pd.DataFrame.from_records(records)
