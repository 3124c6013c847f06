"""The prepared format's ground-truth masks: read from masks.npy with meta.json's attribute regions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from facetraits.data.prepare import prepare_dataset
from facetraits.data.prepared import PreparedData, load_prepared
from facetraits.data.synthetic import ATTRIBUTE_REGIONS, REGIONS
from tests.conftest import study_params


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> PreparedData:
    out = tmp_path_factory.mktemp("prepared") / "prepared"
    prepare_dataset(study_params(data={"image_size": 64, "synthetic": {"n_faces": 12}}).data, out, progress=False)
    return load_prepared(out)


def _region(bits: np.ndarray, region: str) -> np.ndarray:
    return (bits >> REGIONS.index(region)) & 1 == 1


def test_happy_relevance_is_the_mouth_bit_and_small(synthetic: PreparedData) -> None:
    rows = np.arange(8)
    happy = synthetic.relevance_masks("happy")(rows)
    bits = np.asarray(synthetic.masks()[rows])
    assert happy.shape == bits.shape and happy.dtype == bool
    np.testing.assert_array_equal(happy, _region(bits, "mouth"))
    assert happy.any(axis=(1, 2)).all() and happy.mean(axis=(1, 2)).max() < 0.15


def test_a_relevance_mask_is_the_union_of_the_regions_meta_json_names(synthetic: PreparedData) -> None:
    bits = np.asarray(synthetic.masks()[[2, 5]])
    for attribute in synthetic.attributes:
        assert synthetic.meta["attribute_regions"][attribute] == list(ATTRIBUTE_REGIONS[attribute])
        expected = np.logical_or.reduce([_region(bits, region) for region in ATTRIBUTE_REGIONS[attribute]])
        np.testing.assert_array_equal(synthetic.relevance_masks(attribute)(np.array([2, 5])), expected)


def test_masks_follow_meta_json_not_the_renderer(synthetic: PreparedData) -> None:
    """The prepared folder is the one description: a folder whose meta.json says happy lives in the eyes."""
    meta = {**synthetic.meta, "attribute_regions": {**synthetic.meta["attribute_regions"], "happy": ["eyes"]}}
    moved = PreparedData(synthetic.root, synthetic.images, synthetic.faces, meta)
    rows = np.arange(4)
    np.testing.assert_array_equal(moved.relevance_masks("happy")(rows), _region(np.asarray(synthetic.masks()[rows]), "eyes"))


def test_real_faces_have_no_masks(tmp_path: Path, synthetic: PreparedData) -> None:
    without = tmp_path / "prepared"
    without.mkdir()
    for name in ("images.npy", "faces.csv", "meta.json"):
        (without / name).write_bytes((synthetic.root / name).read_bytes())
    assert load_prepared(without).relevance_masks("happy") is None
