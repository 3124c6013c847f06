"""The synthetic source: faces rendered from latent factors, rated by simulated raters, with ground truth."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from facetraits.config import DataParams
from facetraits.data import synthetic
from facetraits.data.sources.base import GroundTruth, SourceFaces, SourceTable, compact_ratings, select_attributes


@dataclass(frozen=True)
class RenderSynthetic:
    """Picklable per-face work for the synthetic source: the item is its factor row."""

    size: int

    def __call__(self, item: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return synthetic.render_face(item, self.size)


def render_synthetic(params: DataParams) -> SourceFaces:
    """data.synthetic's faces: factors and ratings drawn from data.seed, each face rendered at data.image_size."""
    table, factors = _synthetic_table(params)
    attribute_regions = {a: synthetic.ATTRIBUTE_REGIONS[a] for a in table.attributes}
    truth = GroundTruth(synthetic.REGIONS, attribute_regions, pd.DataFrame(factors, columns=synthetic.FACTORS))
    return SourceFaces(table, factors, RenderSynthetic(params.image_size), truth)


def _synthetic_table(params: DataParams) -> tuple[SourceTable, np.ndarray]:
    settings = params.synthetic
    factor_seed, rating_seed = np.random.SeedSequence(params.seed).generate_state(2)
    factors = synthetic.sample_factors(settings.n_faces, int(factor_seed))
    scores = synthetic.attribute_scores(factors)
    raw = synthetic.simulate_ratings(
        scores, settings.n_raters, int(rating_seed), rater_bias_sd=settings.rater_bias_sd, noise_sd=settings.noise_sd
    )
    attributes = select_attributes(synthetic.ATTRIBUTES, params.attributes, Path("synthetic"))
    ids = np.asarray([f"synthetic-{i:05d}" for i in range(settings.n_faces)])
    means = synthetic.mean_ratings(raw, settings.n_faces)[list(attributes)]
    faces = pd.concat(
        [
            pd.DataFrame({"id": ids, "source_file": [f"rendered:seed={params.seed}:{i}" for i in range(len(ids))]}),
            pd.DataFrame({"group": ids}),
            means.reset_index(drop=True),
        ],
        axis=1,
    )
    raw = raw[raw["attribute"].isin(attributes)]
    ratings = compact_ratings(
        pd.DataFrame(
            {
                "id": pd.Categorical.from_codes(raw["face"].to_numpy(), categories=ids),
                "attribute": raw["attribute"].to_numpy(),
                "rating": raw["rating"].to_numpy(dtype=float),
                "rater": raw["rater"].to_numpy(),
                "rating_type": pd.NA,
            }
        )
    )
    table = SourceTable(
        root=Path("."), faces=faces, attributes=attributes, scale=synthetic.RATING_SCALE, ratings=ratings, square="pad"
    )
    return table, factors
