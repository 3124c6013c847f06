"""Which ratings count as independent raters for the reliability."""

from __future__ import annotations

import numpy as np
import pandas as pd

from facetraits.baselines.reliability import split_half_reliability
from facetraits.baselines.study import independent_ratings
from tests.baselines.test_reliability import rater_panel


def with_repeats(panel: pd.DataFrame, share: float, seed: int) -> pd.DataFrame:
    """OMI-like: some raters judge a face twice; the repeat equals the first judgement (a perfectly consistent rater)."""
    rng = np.random.default_rng(seed)
    first = panel.assign(rating_type="normal")
    repeats = first.sample(frac=share, random_state=int(rng.integers(1 << 31))).assign(rating_type="repeat")
    return pd.concat([first, repeats], ignore_index=True)


def test_repeats_inflate_reliability_and_are_left_out() -> None:
    panel = rater_panel(n_faces=400, k=6, noise_sd=2.0, seed=3)
    ratings = with_repeats(panel, share=0.5, seed=4)
    kept = independent_ratings(ratings, ["repeat"])
    assert len(kept) == len(panel)
    assert set(kept["rating_type"]) == {"normal"}
    inflated = split_half_reliability(ratings, ["a"], repeats=10, seed=0).loc["a", "reliability"]
    honest = split_half_reliability(kept, ["a"], repeats=10, seed=0).loc["a", "reliability"]
    reference = split_half_reliability(panel, ["a"], repeats=10, seed=0).loc["a", "reliability"]
    assert honest == reference
    assert inflated > honest + 0.05


def test_missing_rating_types_are_kept() -> None:
    ratings = pd.DataFrame(
        {
            "id": ["a", "a", "b"],
            "attribute": "x",
            "rating": [1.0, 2.0, 3.0],
            "rating_type": pd.array([pd.NA, "repeat", "fill-in"], dtype="string"),
        }
    )
    assert independent_ratings(ratings, ["repeat"])["rating"].tolist() == [1.0, 3.0]
    assert independent_ratings(ratings, [])["rating"].tolist() == [1.0, 2.0, 3.0]
