"""Typed study parameters.

params.yaml is read and validated here, once, at the edge; the library only ever sees these frozen
dataclasses. Unknown keys, wrong types and out-of-range values are errors that name the key.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, get_type_hints

import yaml
from pydantic import ConfigDict, Field, Strict, ValidationError, field_validator, model_validator
from pydantic.dataclasses import dataclass

from facetraits.errors import ConfigError

_FORBID_EXTRA = ConfigDict(extra="forbid")

Int = Annotated[int, Strict()]
Float = Annotated[float, Strict()]
Str = Annotated[str, Field(min_length=1), Strict()]
PathStr = Annotated[str, Field(min_length=1), Strict()]

SourceName = Literal["synthetic", "omi", "us10k", "cfd", "csv"]


@dataclass(config=_FORBID_EXTRA, frozen=True)
class SplitParams:
    train: Float = Field(0.64, gt=0, lt=1)
    val: Float = Field(0.16, ge=0, lt=1)
    test: Float = Field(0.20, ge=0, lt=1)

    @property
    def fractions(self) -> tuple[float, float, float]:
        return (self.train, self.val, self.test)

    @model_validator(mode="after")
    def _fractions_sum_to_one(self) -> SplitParams:
        total = self.train + self.val + self.test
        if not math.isclose(total, 1.0, abs_tol=1e-6):
            raise ValueError(f"train + val + test must be 1, got {total:g}")
        return self


@dataclass(config=_FORBID_EXTRA, frozen=True)
class SyntheticParams:
    n_faces: Int = Field(1000, ge=8)
    n_raters: Int = Field(20, ge=1)
    rater_bias_sd: Float = Field(0.5, ge=0)
    noise_sd: Float = Field(1.0, ge=0)


@dataclass(config=_FORBID_EXTRA, frozen=True)
class OmiParams:
    means: PathStr = "attribute_means.csv"
    images: PathStr = "images"


@dataclass(config=_FORBID_EXTRA, frozen=True)
class Us10kParams:
    table: PathStr = "Full Attribute Scores/psychology attributes/psychology-attributes.xlsx"
    sheet: Str = "Final Values"
    ratings_sheet: Str | None = "All Data"
    images: PathStr = "Face Images"


@dataclass(config=_FORBID_EXTRA, frozen=True)
class CfdParams:
    table: PathStr = "CFD 3.0 Norming Data and Codebook.xlsx"
    sheet: Str | None = None
    images: PathStr = "Images"
    expressions: list[Literal["N", "HC", "HO", "A", "F"]] = Field(default_factory=lambda: ["N"], min_length=1)


@dataclass(config=_FORBID_EXTRA, frozen=True)
class CsvParams:
    table: PathStr = "faces.csv"
    image_column: Str = "image"
    id_column: Str | None = None
    group_column: Str | None = None
    ratings: PathStr | None = None
    rating_range: tuple[Float, Float] = (1.0, 9.0)

    @model_validator(mode="after")
    def _range_is_ordered(self) -> CsvParams:
        low, high = self.rating_range
        if not low < high:
            raise ValueError(f"rating_range must be [low, high] with low < high, got {list(self.rating_range)}")
        return self


@dataclass(config=_FORBID_EXTRA, frozen=True)
class DataParams:
    source: SourceName = "synthetic"
    path: PathStr = "data/raw"
    attributes: Literal["all"] | list[Str] = "all"
    image_size: Int = Field(64, ge=16, le=1024)
    square: Literal["auto", "crop", "pad"] = "auto"
    seed: Int = 0
    split: SplitParams = Field(default_factory=SplitParams)
    on_bad_image: Literal["error", "skip"] = "error"
    max_image_pixels: Int = Field(40_000_000, ge=1)
    workers: Int = Field(0, ge=0)
    synthetic: SyntheticParams = Field(default_factory=SyntheticParams)
    omi: OmiParams = Field(default_factory=OmiParams)
    us10k: Us10kParams = Field(default_factory=Us10kParams)
    cfd: CfdParams = Field(default_factory=CfdParams)
    csv: CsvParams = Field(default_factory=CsvParams)

    @field_validator("attributes")
    @classmethod
    def _attributes_unique(cls, attributes: str | list[str]) -> str | list[str]:
        if isinstance(attributes, list):
            if not attributes:
                raise ValueError("must be 'all' or a non-empty list")
            repeated = sorted({a for a in attributes if attributes.count(a) > 1})
            if repeated:
                raise ValueError(f"listed more than once: {repeated}")
        return attributes


@dataclass(config=_FORBID_EXTRA, frozen=True)
class TrackingParams:
    uri: Str = "sqlite:///mlflow.db"
    experiment: Str = "facetraits"
    artifacts: PathStr = "mlartifacts"
    connect_timeout_s: Float = Field(10.0, gt=0)


@dataclass(config=_FORBID_EXTRA, frozen=True)
class StudyParams:
    data: DataParams = Field(default_factory=DataParams)
    tracking: TrackingParams = Field(default_factory=TrackingParams)


def _dataclass_at(loc: tuple[Any, ...]) -> type | None:
    """The dataclass whose fields the key at `loc` belongs to, for did-you-mean hints."""
    cls: Any = StudyParams
    for key in loc[:-1]:
        cls = get_type_hints(cls).get(key)
        if not is_dataclass(cls):
            return None
    return cls


def _format_error(source: str, error: dict[str, Any]) -> str:
    loc = tuple(part for part in error["loc"] if not (isinstance(part, str) and ("[" in part or "'" in part)))
    key = ".".join(str(part) for part in loc) or "<top level>"
    if error["type"] in ("unexpected_keyword_argument", "extra_forbidden"):
        message = "unknown key"
        owner = _dataclass_at(loc)
        if owner is not None:
            close = difflib.get_close_matches(str(loc[-1]), [f.name for f in fields(owner)], n=1)
            if close:
                message += f" (did you mean '{close[0]}'?)"
    else:
        message = error["msg"]
        if "input" in error and not isinstance(error["input"], dict | list):
            message += f", got {error['input']!r}"
    return f"{source}: {key}: {message}"


def parse_params(raw: Any, source: str = "params") -> StudyParams:
    """Validate an already-loaded mapping; every problem is listed with its dotted key."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping of sections at the top level, got {type(raw).__name__}")
    try:
        return StudyParams(**raw)
    except ValidationError as exc:
        raise ConfigError("\n".join(_format_error(source, e) for e in exc.errors())) from None
    except TypeError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def load_params(path: Path | str) -> StudyParams:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: parameter file not found") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    return parse_params(raw, source=str(path))
