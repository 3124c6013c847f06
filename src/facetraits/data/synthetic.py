"""Procedurally rendered cartoon faces whose attributes are known functions of drawn features.

Every latent factor is drawn inside exactly one face region and every attribute is a documented
function of some factors, so a model's attribution heatmap can be checked against the region
mask of the factors the attribute truly depends on. Nuisance factors change the picture but no
attribute, so a model that relies on them is caught.

Factors are uniform on [-1, 1]; attribute scores are standardized with the exact mean and sd of
that distribution, so one face's score never depends on which other faces share its batch.
"""

from __future__ import annotations

import colorsys
import math
from collections import Counter
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw

FACTORS: tuple[str, ...] = (
    "mouth_curve",  # -1 frown .. +1 smile
    "mouth_open",  # -1 closed .. +1 open
    "brow_slant",  # -1 worried (inner ends up) .. +1 angry V (inner ends down)
    "eye_size",  # -1 small .. +1 large
    "eye_spacing",  # -1 close-set .. +1 wide-set
    "face_width",  # -1 narrow jaw and cheeks .. +1 wide
    "nose_length",  # -1 short .. +1 long
    "skin_tone",  # -1 pale and sallow .. +1 warm and rosy (complexion, not lightness)
    "hair",  # -1 short and light .. +1 long and dark
    "background_hue",
    "background_brightness",
    "shift_x",  # horizontal jitter, +-3 % of the image size
    "shift_y",  # vertical jitter, +-3 % of the image size
)
NUISANCE_FACTORS: tuple[str, ...] = ("background_hue", "background_brightness", "shift_x", "shift_y")
REGIONS: tuple[str, ...] = ("mouth", "brows", "eyes", "nose", "face_outline", "skin", "hair")
FACTOR_REGION: dict[str, str] = {
    "mouth_curve": "mouth",
    "mouth_open": "mouth",
    "brow_slant": "brows",
    "eye_size": "eyes",
    "eye_spacing": "eyes",
    "face_width": "face_outline",
    "nose_length": "nose",
    "skin_tone": "skin",
    "hair": "hair",
}

# attribute -> ((weight, factors multiplied together), ...); the raw score is the weighted sum.
# Antonyms share most factors with opposite signs but not all, so they correlate strongly yet
# imperfectly, as real ratings do; squares and products make a few attributes nonlinear.
ATTRIBUTE_TERMS: dict[str, tuple[tuple[float, tuple[str, ...]], ...]] = {
    "happy": ((1.0, ("mouth_curve",)), (0.3, ("mouth_open",))),
    "unhappy": ((-1.0, ("mouth_curve",)), (-0.4, ("brow_slant",))),
    "trustworthy": (
        (0.6, ("mouth_curve",)),
        (-0.5, ("brow_slant",)),
        (0.35, ("eye_size",)),
        (0.25, ("skin_tone",)),
        (-0.15, ("face_width",)),
    ),
    "untrustworthy": (
        (-0.45, ("mouth_curve",)),
        (0.55, ("brow_slant",)),
        (-0.2, ("eye_size",)),
        (-0.15, ("skin_tone",)),
        (0.35, ("nose_length",)),
    ),
    "dominant": (
        (0.65, ("face_width",)),
        (0.45, ("brow_slant",)),
        (-0.35, ("eye_size",)),
        (0.3, ("nose_length",)),
    ),
    "submissive": (
        (-0.5, ("face_width",)),
        (-0.4, ("brow_slant",)),
        (0.35, ("eye_size",)),
        (0.35, ("hair",)),
        (0.2, ("mouth_curve",)),
    ),
    "attractive": (
        (0.5, ("skin_tone",)),
        (0.35, ("eye_size",)),
        (0.3, ("mouth_curve",)),
        (0.25, ("hair",)),
        (-1.0, ("eye_spacing", "eye_spacing")),
    ),
    "unattractive": (
        (-0.45, ("skin_tone",)),
        (-0.3, ("eye_size",)),
        (-0.2, ("mouth_curve",)),
        (0.25, ("nose_length",)),
        (1.0, ("eye_spacing", "eye_spacing")),
    ),
    "aggressive": (
        (0.8, ("brow_slant",)),
        (-0.4, ("mouth_curve",)),
        (0.3, ("face_width",)),
        (0.35, ("brow_slant", "mouth_open")),
    ),
    "babyface": (
        (0.6, ("eye_size",)),
        (-0.45, ("nose_length",)),
        (0.25, ("face_width",)),
        (-0.2, ("brow_slant",)),
    ),
}
ATTRIBUTES: tuple[str, ...] = tuple(ATTRIBUTE_TERMS)
ATTRIBUTE_REGIONS: dict[str, tuple[str, ...]] = {
    attribute: tuple(
        region
        for region in REGIONS
        if any(FACTOR_REGION[factor] == region for _, factors in terms for factor in factors)
    )
    for attribute, terms in ATTRIBUTE_TERMS.items()
}
RATING_SCALE: tuple[float, float] = (1.0, 9.0)
_RATING_MIDPOINT = 5.0
_RATING_POINTS_PER_SD = 1.5


def _uniform_moment(factor_powers: Counter[str]) -> float:
    """E[prod f**k] for independent f ~ U(-1, 1): odd powers vanish, E[f**k] = 1 / (k + 1)."""
    return math.prod(0.0 if power % 2 else 1.0 / (power + 1) for power in factor_powers.values())


def _score_mean_sd(terms: tuple[tuple[float, tuple[str, ...]], ...]) -> tuple[float, float]:
    """Exact population mean and sd of a raw score, so standardization needs no sample."""
    weights = np.array([weight for weight, _ in terms])
    powers = [Counter(factors) for _, factors in terms]
    means = np.array([_uniform_moment(p) for p in powers])
    second_moments = np.array([[_uniform_moment(p + q) for q in powers] for p in powers])
    covariance = second_moments - np.outer(means, means)
    return float(weights @ means), float(np.sqrt(weights @ covariance @ weights))


_SCORE_MEAN_SD: dict[str, tuple[float, float]] = {
    attribute: _score_mean_sd(terms) for attribute, terms in ATTRIBUTE_TERMS.items()
}


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


def _require_int(value: object, name: str, low: int, high: int | None = None) -> int:
    is_int = isinstance(value, int | np.integer) and not isinstance(value, bool)
    in_range = is_int and value >= low and (high is None or value <= high)
    bounds = f">= {low}" if high is None else f"in [{low}, {high}]"
    _require(in_range, f"{name} must be an integer {bounds}, got {value!r}")
    return int(value)


def _require_factor_matrix(factors: np.ndarray) -> np.ndarray:
    matrix = np.asarray(factors, dtype=np.float64)
    _require(
        matrix.ndim == 2 and matrix.shape[1] == len(FACTORS),
        f"factors must have shape (n, {len(FACTORS)}) with columns {FACTORS}, got {matrix.shape}",
    )
    _require(bool(np.isfinite(matrix).all()), "factors must be finite")
    return matrix


def sample_factors(n_faces: int, seed: int) -> np.ndarray:
    """(n_faces, len(FACTORS)) independent U(-1, 1) factors; bounded so every face renders."""
    n_faces = _require_int(n_faces, "n_faces", 1)
    return np.random.default_rng(seed).uniform(-1.0, 1.0, size=(n_faces, len(FACTORS)))


def attribute_scores(factors: np.ndarray) -> np.ndarray:
    """(n, len(ATTRIBUTES)) noise-free scores, standardized over the factor distribution."""
    matrix = _require_factor_matrix(factors)
    column = {name: matrix[:, index] for index, name in enumerate(FACTORS)}
    scores = np.empty((matrix.shape[0], len(ATTRIBUTES)))
    for index, (attribute, terms) in enumerate(ATTRIBUTE_TERMS.items()):
        raw = sum(weight * np.prod([column[f] for f in term], axis=0) for weight, term in terms)
        mean, sd = _SCORE_MEAN_SD[attribute]
        scores[:, index] = (raw - mean) / sd
    return scores


def simulate_ratings(
    scores: np.ndarray,
    n_raters: int,
    seed: int,
    rater_bias_sd: float = 0.5,
    noise_sd: float = 1.0,
    raters_per_pool: int | None = None,
) -> pd.DataFrame:
    """One row per single 1..9 rating, like a raw rating study, so aggregation can be tested too.

    Each attribute has its own pool of raters with a personal bias; each face gets n_raters
    distinct raters from that pool, and each rating adds independent noise.
    """
    matrix = np.asarray(scores, dtype=np.float64)
    _require(
        matrix.ndim == 2 and matrix.shape[1] == len(ATTRIBUTES),
        f"scores must have shape (n, {len(ATTRIBUTES)}) with columns {ATTRIBUTES}, got {matrix.shape}",
    )
    _require(bool(np.isfinite(matrix).all()), "scores must be finite")
    n_raters = _require_int(n_raters, "n_raters", 1)
    pool_size = 3 * n_raters if raters_per_pool is None else raters_per_pool
    pool_size = _require_int(pool_size, f"raters_per_pool (n_raters = {n_raters})", n_raters)
    _require(rater_bias_sd >= 0, f"rater_bias_sd must be >= 0, got {rater_bias_sd!r}")
    _require(noise_sd >= 0, f"noise_sd must be >= 0, got {noise_sd!r}")

    rng = np.random.default_rng(seed)
    n_faces = matrix.shape[0]
    face = np.repeat(np.arange(n_faces), n_raters)
    digits = max(3, len(str(pool_size - 1)))
    tables = []
    for index, attribute in enumerate(ATTRIBUTES):
        bias = rng.normal(0.0, rater_bias_sd, pool_size)
        rater = rng.random((n_faces, pool_size)).argsort(axis=1)[:, :n_raters].ravel()
        noise = rng.normal(0.0, noise_sd, face.size)
        latent = _RATING_MIDPOINT + _RATING_POINTS_PER_SD * matrix[face, index] + bias[rater] + noise
        names = np.array([f"{attribute}-r{r:0{digits}d}" for r in range(pool_size)], dtype=object)
        tables.append(
            pd.DataFrame(
                {
                    "face": face,
                    "attribute": attribute,
                    "rater": names[rater],
                    "rating": np.clip(np.round(latent), *RATING_SCALE),
                }
            )
        )
    return pd.concat(tables, ignore_index=True)


def mean_ratings(ratings: pd.DataFrame, n_faces: int) -> pd.DataFrame:
    """(n_faces, len(ATTRIBUTES)) per-face mean rating; NaN where a face has no rating."""
    n_faces = _require_int(n_faces, "n_faces", 1)
    missing = {"face", "attribute", "rating"} - set(ratings.columns)
    _require(not missing, f"ratings lacks columns {sorted(missing)}")
    unknown = set(ratings["attribute"].unique()) - set(ATTRIBUTES)
    _require(not unknown, f"ratings has unknown attributes {sorted(unknown)}; known: {ATTRIBUTES}")
    face = ratings["face"].to_numpy()
    _require(
        face.size == 0 or (face.min() >= 0 and face.max() < n_faces),
        f"ratings.face must index 0..{n_faces - 1} (n_faces = {n_faces})",
    )
    means = ratings.groupby(["face", "attribute"])["rating"].mean().unstack("attribute")
    means = means.reindex(index=pd.RangeIndex(n_faces), columns=list(ATTRIBUTES))
    means.columns.name = None
    return means.astype(np.float64)


# --- rendering -------------------------------------------------------------------------------
# Geometry is in "face units": the image spans [-1, 1] on both axes, y points down, and feature
# coordinates are relative to the face centre. Feature extents are chosen so that no factor can
# move any feature into another factor's region.

_SUPERSAMPLE = 2
_SHIFT = 0.06  # 3 % of the image size at shift_x or shift_y = +-1
_FACE_CENTRE_Y = 0.06
_FACE_HALF_HEIGHT = 0.70
_FACE_HALF_WIDTH = (0.43, 0.57)  # at face_width -1 and +1
_MASK_MARGIN = 0.03

_SKIN = ((226, 212, 198), (236, 174, 144))  # at skin_tone -1 and +1
_HAIR = ((205, 160, 98), (36, 26, 22))  # at hair -1 and +1
_BLUSH = (222, 86, 96)
_LIP = (190, 78, 88)
_MOUTH_INSIDE = (72, 22, 30)
_EYE_LINE = (52, 36, 36)
_SCLERA = (250, 250, 247)
_IRIS = (96, 66, 40)
_PUPIL = (16, 10, 10)
_GLINT = (255, 255, 255)
_BROW = (62, 44, 36)
_SHIRT = (72, 98, 142)

_RGB = tuple[int, int, int]


class _Ellipse(NamedTuple):
    cx: float
    cy: float
    rx: float
    ry: float

    def bounds(self) -> tuple[float, float, float, float]:
        return self.cx - self.rx, self.cy - self.ry, self.cx + self.rx, self.cy + self.ry


class _Polygon(NamedTuple):
    points: tuple[tuple[float, float], ...]

    def bounds(self) -> tuple[float, float, float, float]:
        xs, ys = zip(*self.points, strict=True)
        return min(xs), min(ys), max(xs), max(ys)


_Shape = _Ellipse | _Polygon
_Layer = tuple[_Shape, _RGB]  # painted in order, later layers on top
_MaskLayer = tuple[_Shape, bool]  # True adds the shape to the region, False cuts it out


def _lerp(low: float, high: float, factor: float) -> float:
    """Map a factor in [-1, 1] onto [low, high]."""
    return low + (high - low) * (factor + 1.0) / 2.0


def _mix(colour: _RGB, other: _RGB, amount: float) -> _RGB:
    return tuple(round(a + (b - a) * amount) for a, b in zip(colour, other, strict=True))


def _shade(colour: _RGB, amount: float) -> _RGB:
    return _mix(colour, (0, 0, 0), amount)


def _padded_box(layers: Sequence[_Layer], margin: float) -> _MaskLayer:
    """Rectangle around a small feature's drawn shapes, so a heatmap on the feature lands inside."""
    left, top, right, bottom = np.array([shape.bounds() for shape, _ in layers]).T
    x0, y0, x1, y1 = left.min() - margin, top.min() - margin, right.max() + margin, bottom.max() + margin
    return _Polygon(((x0, y0), (x1, y0), (x1, y1), (x0, y1))), True


def _mouth(curve: float, openness: float) -> list[_Layer]:
    """Lips along a parabola whose corners rise for a smile; the opening grows between them."""
    half_width, centre_y = 0.16, 0.36
    s = np.linspace(-1.0, 1.0, 17)
    x = half_width * s
    bulge = 1.0 - s**2
    lift = 0.06 * curve
    centre_line = centre_y + lift * bulge - lift / 2
    gap = _lerp(0.008, 0.08, openness) * bulge / 2
    lip = 0.034 * np.sqrt(bulge) + 0.006

    def band(upper: np.ndarray, lower: np.ndarray) -> _Polygon:
        return _Polygon(tuple(zip(np.r_[x, x[::-1]], np.r_[upper, lower[::-1]], strict=True)))

    return [
        (band(centre_line - gap - lip, centre_line + gap + 1.2 * lip), _LIP),
        (band(centre_line - gap, centre_line + gap), _MOUTH_INSIDE),
    ]


def _eye(cx: float, cy: float, radius: float) -> list[_Layer]:
    return [
        (_Ellipse(cx, cy, 1.25 * radius + 0.012, radius + 0.012), _EYE_LINE),
        (_Ellipse(cx, cy, 1.25 * radius, radius), _SCLERA),
        (_Ellipse(cx, cy, 0.6 * radius, 0.6 * radius), _IRIS),
        (_Ellipse(cx, cy, 0.3 * radius, 0.3 * radius), _PUPIL),
        (_Ellipse(cx + 0.22 * radius, cy - 0.22 * radius, 0.12 * radius, 0.12 * radius), _GLINT),
    ]


def _brow(cx: float, cy: float, slant: float) -> list[_Layer]:
    """A tapered bar; a positive slant lowers the inner end (angry), a negative one raises it."""
    half_length, thickness = 0.10, 0.036
    angle = math.radians(18.0) * slant
    outward = math.copysign(1.0, cx)
    dx, dy = outward * half_length * math.cos(angle), -half_length * math.sin(angle)
    inner, outer = (cx - dx, cy - dy), (cx + dx, cy + dy)
    nx, ny = -dy / half_length, dx / half_length
    return [
        (
            _Polygon(
                (
                    (inner[0] + nx * thickness / 2, inner[1] + ny * thickness / 2),
                    (outer[0] + nx * thickness / 3, outer[1] + ny * thickness / 3),
                    (outer[0] - nx * thickness / 3, outer[1] - ny * thickness / 3),
                    (inner[0] - nx * thickness / 2, inner[1] - ny * thickness / 2),
                )
            ),
            _BROW,
        )
    ]


def _nose(length: float, skin: _RGB) -> list[_Layer]:
    tip_y = _lerp(0.07, 0.19, length)
    return [
        (_Polygon(((-0.015, -0.02), (0.015, -0.02), (0.045, tip_y), (-0.045, tip_y))), _shade(skin, 0.08)),
        (_Ellipse(0.0, tip_y, 0.06, 0.035), _shade(skin, 0.12)),
        (_Ellipse(-0.028, tip_y + 0.012, 0.016, 0.01), _shade(skin, 0.5)),
        (_Ellipse(0.028, tip_y + 0.012, 0.016, 0.01), _shade(skin, 0.5)),
    ]


def _face_layers(factor: dict[str, float], margin: float) -> tuple[list[_Layer], dict[str, list[_MaskLayer]]]:
    """Painted shapes in z-order, and per region the shapes whose union (minus cuts) is its mask."""
    skin = _mix(*_SKIN, (factor["skin_tone"] + 1) / 2)
    hair = _mix(*_HAIR, (factor["hair"] + 1) / 2)
    blush = _mix(skin, _BLUSH, _lerp(0.08, 0.4, factor["skin_tone"]))
    half_width = _lerp(*_FACE_HALF_WIDTH, factor["face_width"])
    hair_bottom = _lerp(0.0, 0.8, factor["hair"])
    eye_x = _lerp(0.15, 0.25, factor["eye_spacing"])
    eye_radius = _lerp(0.05, 0.10, factor["eye_size"])

    cap = _Ellipse(0.0, -0.08, 0.62, 0.68)
    sides = _Polygon(((-0.62, -0.08), (0.62, -0.08), (0.60, hair_bottom), (-0.60, hair_bottom)))
    shoulders = _Ellipse(0.0, 1.22, 0.9, 0.42)
    neck = _Polygon(((-0.17, 0.3), (0.17, 0.3), (0.19, 1.3), (-0.19, 1.3)))
    face = _Ellipse(0.0, 0.0, half_width, _FACE_HALF_HEIGHT)
    fringe = _Ellipse(0.0, -0.6, 0.38, 0.22)
    cheeks = [(_Ellipse(side * 0.27, 0.18, 0.09, 0.06), blush) for side in (-1, 1)]
    nose = _nose(factor["nose_length"], skin)
    eyes = [_eye(side * eye_x, -0.06, eye_radius) for side in (-1, 1)]
    brows = [_brow(side * 0.21, -0.25, factor["brow_slant"]) for side in (-1, 1)]
    mouth = _mouth(factor["mouth_curve"], factor["mouth_open"])

    layers = [(cap, hair), (sides, hair), (shoulders, _SHIRT), (neck, _shade(skin, 0.1)), (face, skin)]
    layers += [(fringe, hair), *cheeks, *nose, *eyes[0], *eyes[1], *brows[0], *brows[1], *mouth]
    widest, narrowest = _FACE_HALF_WIDTH[1] + margin, _FACE_HALF_WIDTH[0] - margin
    masks = {
        "mouth": [_padded_box(mouth, margin)],
        "brows": [_padded_box(brow, margin) for brow in brows],
        "eyes": [_padded_box(eye, margin) for eye in eyes],
        "nose": [_padded_box(nose, margin)],
        "face_outline": [
            (_Ellipse(0.0, 0.0, widest, _FACE_HALF_HEIGHT + margin), True),
            (_Ellipse(0.0, 0.0, narrowest, _FACE_HALF_HEIGHT - margin), False),
        ],
        "skin": [(neck, True), (face, True), (fringe, False)],
        "hair": [(cap, True), (sides, True), (shoulders, False), (neck, False), (face, False), (fringe, True)],
    }
    return layers, masks


def _draw(canvas: Image.Image, layers: Sequence[tuple[_Shape, _RGB | int]], centre: tuple[float, float]) -> None:
    """Paint shapes given in face units onto a canvas, the one drawing path for image and masks."""
    draw = ImageDraw.Draw(canvas)
    half = canvas.width / 2

    def to_pixels(x: float, y: float) -> tuple[float, float]:
        return (x + centre[0] + 1.0) * half, (y + centre[1] + 1.0) * half

    for shape, fill in layers:
        if isinstance(shape, _Ellipse):
            left, top, right, bottom = shape.bounds()
            draw.ellipse((*to_pixels(left, top), *to_pixels(right, bottom)), fill=fill)
        else:
            draw.polygon([to_pixels(x, y) for x, y in shape.points], fill=fill)


def _require_factor_row(factors_row: np.ndarray) -> dict[str, float]:
    row = np.asarray(factors_row, dtype=np.float64)
    _require(row.shape == (len(FACTORS),), f"factors_row must have shape ({len(FACTORS)},), got {row.shape}")
    _require(
        bool(np.isfinite(row).all() and (np.abs(row) <= 1.0).all()),
        f"factors_row values must lie in [-1, 1], got {dict(zip(FACTORS, row.round(3).tolist(), strict=True))}",
    )
    return dict(zip(FACTORS, row.tolist(), strict=True))


def render_face(factors_row: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(image uint8 (size, size, 3), region_bits uint8 (size, size)); bit r marks REGIONS[r].

    Drawn at 2x and box-downsampled for antialiasing; masks go through the same path, so a
    pixel any region's shape touches at all is in that region and masks stay aligned with jitter.
    """
    factor = _require_factor_row(factors_row)
    size = _require_int(size, "size", 16, 1024)
    margin = _MASK_MARGIN + 2.0 / size  # at least one output pixel beyond the drawn feature
    layers, masks = _face_layers(factor, margin)
    centre = (_SHIFT * factor["shift_x"], _FACE_CENTRE_Y + _SHIFT * factor["shift_y"])
    canvas_size = _SUPERSAMPLE * size

    hue = _lerp(0.0, 0.9, factor["background_hue"])  # not the full circle: -1 and +1 must differ
    brightness = _lerp(0.45, 0.95, factor["background_brightness"])
    background = tuple(round(255 * c) for c in colorsys.hsv_to_rgb(hue, 0.35, brightness))
    canvas = Image.new("RGB", (canvas_size, canvas_size), background)
    _draw(canvas, layers, centre)
    image = np.asarray(canvas.reduce(_SUPERSAMPLE), dtype=np.uint8)

    region_bits = np.zeros((size, size), dtype=np.uint8)
    for bit, region in enumerate(REGIONS):
        mask = Image.new("L", (canvas_size, canvas_size), 0)
        _draw(mask, [(shape, 255 if inside else 0) for shape, inside in masks[region]], centre)
        region_bits |= (np.asarray(mask.reduce(_SUPERSAMPLE)) > 0).astype(np.uint8) << bit
    return image, region_bits
