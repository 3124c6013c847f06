"""Face regions and region occlusion: regions land on the parts, occlusion finds what a model reads, for any model."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from torch import nn

from facetraits.config import ExplainParams
from facetraits.data.prepared import PreparedData
from facetraits.data.synthetic import FACTORS, render_face
from facetraits.data.synthetic import REGIONS as GENERATOR_REGIONS
from facetraits.errors import ConfigError
from facetraits.explain.maps import image_batch
from facetraits.explain.methods import build_method
from facetraits.explain.methods.base import baseline_images
from facetraits.explain.outputs import _region_variant_checkpoints, write_explain_outputs
from facetraits.explain.region_importance import FIGURE_FILE, TABLE_FILE, region_importance
from facetraits.explain.regions import LABEL, REGIONS, FaceRegions, landmark_regions, synthetic_regions
from facetraits.explain.study import explain_study, mean_rows
from tests.conftest import OMI_DEV
from tests.explain.conftest import mouth_only_net

PARAMS = ExplainParams(
    methods=["gradcam"], gradcam_block=1, gallery_faces=2, mean_faces=8, score_faces=2, curve_steps=4, batch_size=8,
    bootstrap_resamples=200,
)  # fmt: skip


def centroid(labels: np.ndarray, region: str) -> np.ndarray:
    ys, xs = np.nonzero(labels == LABEL[region])
    return np.array([xs.mean(), ys.mean()])


def test_synthetic_regions_partition_the_face_and_lie_where_the_generator_drew_the_parts() -> None:
    size = 64
    factors = np.zeros(len(FACTORS))  # centred face: shift 0, so every part sits at its documented place
    image, bits = render_face(factors, size)
    labels = synthetic_regions(bits[None], GENERATOR_REGIONS)[0]
    assert labels.shape == (size, size) and labels.max() < len(REGIONS)
    assert set(np.unique(labels)) == set(range(len(REGIONS))), "every region of the vocabulary is on the face"
    to_pixels = lambda y: (y + 0.06 + 1.0) * size / 2  # noqa: E731 - face units (y down, centre 0.06) -> rows
    for region, row in {"brows": -0.25, "eyes": -0.06, "mouth": 0.36}.items():
        x, y = centroid(labels, region)
        assert y == pytest.approx(to_pixels(row), abs=1.5), region
        assert x == pytest.approx(size / 2 - 0.5, abs=1.0), f"{region}: both sides, centred"
    generator_mouth = (bits & (1 << GENERATOR_REGIONS.index("mouth"))) != 0
    assert generator_mouth[labels == LABEL["mouth"]].all(), "mouth pixels are the generator's mouth"
    assert centroid(labels, "forehead_hair")[1] < centroid(labels, "brows")[1] < centroid(labels, "nose")[1]


def real_face(index: int = 0) -> np.ndarray:
    files = sorted((OMI_DEV / "images").glob("*.jpg"))
    if not files:
        pytest.skip(f"OMI development copy not found at {OMI_DEV}")
    return np.asarray(Image.open(files[index]).convert("RGB").resize((128, 128)))


def prepared(images: np.ndarray, tmp_path) -> PreparedData:
    faces = pd.DataFrame({"id": [str(i) for i in range(len(images))], "split": "test"})
    return PreparedData(root=tmp_path, images=images, faces=faces, meta={"attributes": ["happy"]})


def test_landmark_regions_of_a_real_face_lie_on_its_parts_and_an_undetected_face_is_listed(tmp_path) -> None:
    pytest.importorskip("dlib")
    blank = np.full((128, 128, 3), 128, dtype=np.uint8)
    regions = FaceRegions(prepared(np.stack([real_face(), blank]), tmp_path))
    labels = regions([0, 1])
    assert regions.source == "dlib 68 landmarks" and regions.undetected == {1}, "the blank image has no face"
    face = labels[0]
    assert set(np.unique(face)) == set(range(len(REGIONS)))
    rows = [centroid(face, r)[1] for r in ("forehead_hair", "brows", "eyes", "nose", "mouth", "jaw")]
    assert rows == sorted(rows), f"top to bottom: forehead, brows, eyes, nose, mouth, jaw; rows {rows}"
    eye_columns = np.nonzero((face == LABEL["eyes"]).any(axis=0))[0]
    nose_x = centroid(face, "nose")[0]
    assert eye_columns.min() < nose_x < eye_columns.max(), "an eye either side of the nose"
    assert (face == LABEL["background"]).mean() > 0.1 and (face == LABEL["cheeks"]).any()
    assert regions([1]).shape == (1, 128, 128), "an undetected face still gets regions (the whole-image box)"


def test_landmark_regions_follow_the_landmarks() -> None:
    rng = np.random.default_rng(0)
    points = np.column_stack([rng.uniform(40, 80, 68), rng.uniform(40, 80, 68)])
    points[0:17, 0] = np.linspace(30, 90, 17)
    moved = landmark_regions(points + [5, 7], 128)
    np.testing.assert_array_equal(moved[7:, 5:], landmark_regions(points, 128)[:-7, :-5])


class MouthReader(nn.Module):
    """The mean of the pixels every given face has in its mouth region: a model that reads the mouth and nothing
    else. With `refuse_gradients`, like dlib's face features: no gradient passes it."""

    def __init__(self, window: np.ndarray, refuse_gradients: bool = False) -> None:
        super().__init__()
        self.window = nn.Parameter(torch.from_numpy(window).float(), requires_grad=False)
        self.attributes = ("happy",)
        self.refuse_gradients = refuse_gradients

    def standardized(self, images: torch.Tensor) -> torch.Tensor:
        if self.refuse_gradients and images.requires_grad and torch.is_grad_enabled():
            raise RuntimeError("no gradient passes this model")
        return ((images * self.window).sum(dim=(1, 2, 3)) / self.window.sum())[:, None]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.standardized(images)


@pytest.mark.parametrize("refuse_gradients", [False, True])
def test_occluding_the_region_a_model_reads_drops_its_prediction_and_other_regions_do_nothing(
    faces, refuse_gradients
) -> None:
    regions, rows = FaceRegions(faces), np.arange(6)
    window = (regions(rows) == LABEL["mouth"]).all(axis=0)
    model = MouthReader(window, refuse_gradients)
    images = image_batch(faces.images, rows, torch.device("cpu"))
    method = build_method("region_occlusion", model, PARAMS, regions)
    (drops,) = method.region_drops(images, [0], rows.tolist())
    mouths = torch.from_numpy(regions(rows) == LABEL["mouth"])[:, None]
    occluded = torch.where(mouths, baseline_images(images, "blur", 0.1), images)
    expected = (model.standardized(images) - model.standardized(occluded))[:, 0].numpy()
    np.testing.assert_allclose(drops[:, LABEL["mouth"]], expected, atol=1e-6)
    assert np.abs(expected).min() > 1e-3, "blurring the mouth changes what the model reads"
    others = np.delete(drops, LABEL["mouth"], axis=1)
    assert np.nanmax(np.abs(others)) < 1e-6, "occluding a region the model does not read changes nothing"
    maps = method.maps(images, 0, rows.tolist()).numpy()
    mouth_maps = [face_map[mouth[0].numpy()] for face_map, mouth in zip(maps, mouths, strict=True)]
    for face_map, drop in zip(mouth_maps, expected, strict=True):
        np.testing.assert_allclose(face_map, abs(drop), atol=1e-6)  # the map: each region's |drop| over its pixels
    if refuse_gradients:
        with pytest.raises(RuntimeError, match="no gradient"):
            build_method("saliency", model, PARAMS).maps(images, 0)


def test_region_occlusion_needs_regions_and_variants_must_exist(tmp_path) -> None:
    with pytest.raises(ConfigError, match="needs the faces' regions"):
        build_method("region_occlusion", MouthReader(np.ones((4, 4), bool)), PARAMS)
    with pytest.raises(ConfigError, match=r"region_variants: \['nope'\] are not variants"):
        _region_variant_checkpoints(["nope"], ["probe"], tmp_path, tmp_path / "params.yaml")
    with pytest.raises(ValueError, match="region_importance: true"):
        ExplainParams(region_importance=False, region_variants=["probe"])


def test_region_table_and_figure_cover_every_model_attribute_and_region(faces, mouth_region, tmp_path) -> None:
    net = mouth_only_net(mouth_region, attributes=("happy", "dominant"))
    explanations = explain_study(net, faces, ["happy", "dominant"], PARAMS, show_progress=False)
    regions, sample = FaceRegions(faces), mean_rows(faces.indices("test"), PARAMS)
    np.testing.assert_array_equal(sample, explanations[0].selection.mean_rows)  # the explain stage's mean faces
    importances = [
        *region_importance(net, faces, sample, ["happy", "dominant"], regions, PARAMS, "main", show_progress=False),
        *region_importance(net, faces, sample, ["happy"], regions, PARAMS, "copy", show_progress=False),
    ]
    outputs = write_explain_outputs(faces, explanations, tmp_path / "explain", PARAMS, importances, regions)
    table = pd.read_csv(tmp_path / "explain" / TABLE_FILE)
    assert len(table) == 3 * len(REGIONS) and list(table["region"][: len(REGIONS)]) == list(REGIONS)
    pd.testing.assert_frame_equal(table, outputs.regions, check_exact=False, check_dtype=False)
    assert (table["faces"] == len(sample)).all() and (table["undetected"] == 0).all()
    happy = table[(table["model"] == "main") & (table["attribute"] == "happy")].set_index("region")
    assert happy["importance"].idxmax() == "mouth", "the mouth-only model relies on the mouth most"
    assert (happy["importance_ci_low"] <= happy["importance"]).all()
    assert (happy["importance"] <= happy["importance_ci_high"]).all()
    assert happy["area"].sum() == pytest.approx(1.0), "the regions partition the image"
    assert (tmp_path / "explain" / FIGURE_FILE).stat().st_size > 5000
