"""The parts of a face as an integer map (H, W): what region occlusion removes one at a time, for any face.

Every pixel gets exactly one region of `REGIONS` (background is the rest). Real faces get theirs from dlib's 68
landmarks (polygons drawn in a fixed order, later parts over earlier ones); synthetic faces from the masks their
generator drew, so the default study needs no dlib. Both use one vocabulary, so tables and figures compare.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

from facetraits.data.prepared import PreparedData

REGIONS: tuple[str, ...] = ("background", "forehead_hair", "brows", "eyes", "nose", "cheeks", "mouth", "jaw")
LABEL = {region: index for index, region in enumerate(REGIONS)}

# 68-point scheme (iBUG 300-W), 0-based
_JAW = np.arange(0, 17)
_BROWS = (np.arange(17, 22), np.arange(22, 27))
_NOSE_OUTLINE = np.array([27, 35, 34, 33, 32, 31])
_EYES = (np.arange(36, 42), np.arange(42, 48))
_MOUTH = np.arange(48, 60)
_LOWER_JAW = np.arange(4, 13)  # chin and jawline: the face below the line from point 4 to point 12
# sizes as fractions of the face's width (jaw point 0 to 16), and enlargements about a part's centre: the
# landmarks trace a part's edge, and occluding it must take the eyelids, the nostrils and the lips' margins too
_HAIR_SIDE, _HAIR_HEIGHT = 0.15, 0.9
_BROW_ABOVE, _BROW_BELOW = 0.04, 0.07
_EYE_SCALE, _NOSE_SCALE, _MOUTH_SCALE = 1.6, 1.3, 1.2

# synthetic generator's region -> ours, painted in this order (later over earlier); skin above the brows is
# forehead, skin below the face outline (the neck) background
_SYNTHETIC = (("hair", "forehead_hair"), ("skin", "cheeks"), ("face_outline", "jaw"), ("nose", "nose"),
              ("mouth", "mouth"), ("brows", "brows"), ("eyes", "eyes"))  # fmt: skip


def _scaled(points: np.ndarray, scale: float) -> np.ndarray:
    centre = points.mean(axis=0)
    return centre + scale * (points - centre)


def landmark_regions(points: np.ndarray, size: int) -> np.ndarray:
    """uint8 (size, size) region labels of a face from its (68, 2) landmarks (x, y) in pixels."""
    points = np.asarray(points, dtype=np.float64)
    width = float(np.linalg.norm(points[16] - points[0]))
    brows = np.concatenate([points[_BROWS[0]], points[_BROWS[1]]])
    top = brows[:, 1].min() - _HAIR_HEIGHT * width
    left, right = points[0, 0] - _HAIR_SIDE * width, points[16, 0] + _HAIR_SIDE * width
    parts = [
        ("forehead_hair", np.array([[left, points[0, 1]], [left, top], [right, top], [right, points[16, 1]],
                                    points[16], *brows[::-1], points[0]])),  # fmt: skip
        ("cheeks", np.concatenate([points[_JAW], brows[::-1]])),
        ("jaw", points[_LOWER_JAW]),
        ("nose", _scaled(points[_NOSE_OUTLINE], _NOSE_SCALE)),
        ("mouth", _scaled(points[_MOUTH], _MOUTH_SCALE)),
        *[("brows", np.concatenate([p - [0, _BROW_ABOVE * width], (p + [0, _BROW_BELOW * width])[::-1]]))
          for p in (points[b] for b in _BROWS)],  # fmt: skip
        *[("eyes", _scaled(points[eye], _EYE_SCALE)) for eye in _EYES],
    ]
    canvas = Image.new("L", (size, size), LABEL["background"])
    draw = ImageDraw.Draw(canvas)
    for region, polygon in parts:
        draw.polygon([tuple(p) for p in polygon], fill=LABEL[region])
    return np.asarray(canvas, dtype=np.uint8)


def synthetic_regions(region_bits: np.ndarray, bit_regions: Sequence[str]) -> np.ndarray:
    """uint8 (B, S, S) region labels from a synthetic generator's per-pixel region bits (bit i: `bit_regions[i]`)."""
    bits = np.asarray(region_bits)

    def has(region: str) -> np.ndarray:
        return (bits & (1 << list(bit_regions).index(region))) != 0

    labels = np.full(bits.shape, LABEL["background"], dtype=np.uint8)
    rows = np.arange(bits.shape[1]).reshape(1, -1, 1)
    brows_top = np.where(has("brows").any(axis=2), rows[..., 0], bits.shape[1]).min(axis=1).reshape(-1, 1, 1)
    outline_bottom = np.where(has("face_outline").any(axis=2), rows[..., 0], -1).max(axis=1).reshape(-1, 1, 1)
    for generator_region, region in _SYNTHETIC:
        labels[has(generator_region)] = LABEL[region]
        if generator_region == "skin":
            labels[has("skin") & (rows < brows_top)] = LABEL["forehead_hair"]
            labels[has("skin") & (rows > outline_bottom)] = LABEL["background"]
    return labels


def typical_layout(labels: np.ndarray) -> np.ndarray:
    """(S, S) the most common region of each pixel over faces (B, S, S): the parts of the average aligned face."""
    counts = np.stack([(labels == index).sum(axis=0) for index in range(len(REGIONS))])
    return counts.argmax(axis=0).astype(np.uint8)


class FaceRegions:
    """Region labels of prepared faces by row, each face's computed once: from the generator's masks (synthetic
    data) or dlib's landmarks; a face dlib does not detect is placed in the whole-image box and listed."""

    def __init__(self, data: PreparedData) -> None:
        self.images = data.images
        self.bits = data.masks()
        self.source = "synthetic generator" if self.bits is not None else "dlib 68 landmarks"
        self.bit_regions = tuple(data.meta.get("regions", ()))
        self.known: dict[int, np.ndarray] = {}
        self.undetected: set[int] = set()
        self._analyzer = None

    def __call__(self, rows: Sequence[int]) -> np.ndarray:
        """uint8 (len(rows), S, S) labels of the faces at `rows`."""
        rows = [int(row) for row in rows]
        if self.bits is not None:
            return synthetic_regions(np.asarray(self.bits[rows]), self.bit_regions)
        for row in rows:
            if row not in self.known:
                self.known[row] = self._landmark_labels(row)
        return np.stack([self.known[row] for row in rows]) if rows else np.zeros((0, *self.images.shape[1:3]), np.uint8)

    def _landmark_labels(self, row: int) -> np.ndarray:
        if self._analyzer is None:
            from facetraits.models.components.face_features import FaceAnalyzer  # dlib only for real faces

            self._analyzer = FaceAnalyzer()
        points, detected = self._analyzer.landmarks(np.asarray(self.images[row]))
        if not detected:
            self.undetected.add(row)
        return landmark_regions(points, self.images.shape[1])
