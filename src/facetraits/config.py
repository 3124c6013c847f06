"""Typed study parameters.

params.yaml is read and validated here, once, at the edge; the library only ever sees these frozen
dataclasses. Unknown keys, wrong types and out-of-range values are errors that name the key.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import re
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_type_hints

import yaml
from pydantic import AllowInfNan, ConfigDict, Field, Strict, ValidationError, field_validator, model_validator
from pydantic.dataclasses import dataclass

from facetraits.errors import ConfigError
from facetraits.models.backbone_labels import BACKBONE_LABELS

_FORBID_EXTRA = ConfigDict(extra="forbid")

Int = Annotated[int, Strict()]
# .inf / .nan are floats to YAML: every float knob refuses them here, in one place
Float = Annotated[float, Strict(), AllowInfNan(False)]
Bool = Annotated[bool, Strict()]
Str = Annotated[str, Field(min_length=1), Strict()]
PathStr = Annotated[str, Field(min_length=1), Strict()]

# names that become paths, DVC stage names and shell words (dvc.yaml's `variant@<name>`)
VARIANT_NAME = re.compile(r"[A-Za-z0-9_-]+")

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
class MemorabilityColumns:
    """Column names of the memorability workbook. Filename, HR and FAR are spelt as public readers of the real file
    read them; the count columns' spelling is not confirmed: null = the sheet has no counts (no per-trial ratings)."""

    filename: Str = "Filename"
    hit_rate: Str = "Hit Rate (HR)"
    false_alarm_rate: Str = "False Alarm Rate (FAR)"
    hits: Str | None = "Hits"
    misses: Str | None = "Misses"


@dataclass(config=_FORBID_EXTRA, frozen=True)
class Us10kParams:
    table: PathStr = "Full Attribute Scores/psychology attributes/psychology-attributes.xlsx"
    sheet: Str = "Final Values"
    ratings_sheet: Str | None = "All Data"
    images: PathStr = "Face Images"
    # a `memorability` target next to the traits: the hit rate, or hit rate - false alarm rate (docs/memorability.md)
    memorability: Literal["none", "hit_rate", "corrected_hit_rate"] = "none"
    memorability_table: PathStr = "Memorability Scores/memorability-scores.xlsx"
    memorability_sheet: Str | None = None  # null = the workbook's first sheet
    memorability_columns: MemorabilityColumns = Field(default_factory=MemorabilityColumns)


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


FaceBlock = Literal["face_embedding", "face_landmarks"]


@dataclass(config=_FORBID_EXTRA, frozen=True)
class FaceFeaturesParams:
    """dlib's face blocks, computed once per prepared data set by the face_features stage for the fused probes that
    name them in train.probe_blocks; none (the default) and the stage writes its manifest alone, without dlib."""

    blocks: list[FaceBlock] = Field(default_factory=list)
    # a face dlib's detector misses: measured in the whole-image box (prepared faces are cropped to the face) and
    # listed, or an error naming the image files
    undetected: Literal["whole_image", "error"] = "whole_image"
    workers: Int = Field(0, ge=0)  # processes; 0 = every core

    @field_validator("blocks")
    @classmethod
    def _blocks_unique(cls, blocks: list[str]) -> list[str]:
        if len(set(blocks)) != len(blocks):
            raise ValueError(f"name each block once, not {blocks}")
        return blocks


@dataclass(config=_FORBID_EXTRA, frozen=True)
class ModelParams:
    backbone: Str = "vgg16_bn"
    weights: Str = "none"
    trainable_blocks: Int = Field(5, ge=0, le=5)
    head: Literal["linear", "mlp"] = "mlp"
    head_hidden: Int = Field(128, ge=1)
    dropout: Float = Field(0.2, ge=0, lt=1)
    pool: Literal["avg", "avgmax"] = "avg"
    hflip_average: Bool = False

    @field_validator("backbone")
    @classmethod
    def _known_backbone(cls, backbone: str) -> str:
        if backbone not in BACKBONE_LABELS:
            raise ValueError(f"unknown backbone '{backbone}'; known: {sorted(BACKBONE_LABELS)}")
        return backbone


@dataclass(config=_FORBID_EXTRA, frozen=True)
class AugmentParams:
    hflip: Float = Field(0.5, ge=0, le=1)
    rotation_deg: Float = Field(10.0, ge=0, le=180)
    strength: Float = Field(1.0, ge=0)


@dataclass(config=_FORBID_EXTRA, frozen=True)
class TrainParams:
    protocol: Literal["shared", "per_attribute", "probe"] = "shared"
    # the faces the final model learns from; "train+val": val makes its choices (ridge penalty, SVR C) first, then
    # the model is refitted on both, fine-tuning runs its whole schedule and keeps its last epoch (no val scores)
    fit_on: Literal["train", "train+val"] = "train"
    loss: Literal["mse", "smooth_l1", "huber", "mse_pearson"] = "mse"
    huber_delta: Float = Field(1.0, gt=0)
    pearson_weight: Float = Field(0.5, ge=0)
    optimizer: Literal["adam", "adamw", "sgd"] = "adamw"
    lr: Float = Field(1e-3, gt=0)
    backbone_lr_scale: Float = Field(1.0, gt=0)
    weight_decay: Float = Field(1e-4, ge=0)
    momentum: Float = Field(0.9, ge=0, lt=1)
    scheduler: Literal["cosine", "none", "onecycle"] = "cosine"
    warmup_share: Float = Field(0.3, gt=0, lt=1)  # onecycle: share of the steps spent warming up
    batch_size: Int = Field(32, ge=1)
    max_epochs: Int = Field(5, ge=1)
    patience: Int = Field(3, ge=1)
    seed: Int = 42
    augment: AugmentParams = Field(default_factory=AugmentParams)
    num_workers: Int = Field(0, ge=0)
    pin_memory: Literal["auto"] | Bool = "auto"
    accelerator: Literal["auto", "cpu", "gpu"] = "auto"
    devices: Literal["auto"] | Annotated[int, Strict(), Field(ge=1)] = 1
    num_nodes: Int = Field(1, ge=1)
    strategy: Literal["auto", "ddp", "ddp_spawn", "ddp_fork"] = "auto"
    precision: Literal["auto", "32-true", "bf16-mixed", "16-mixed"] = "auto"
    channels_last: Literal["auto"] | Bool = "auto"
    resume: Bool = True
    progress_bar: Bool = True
    attribute_workers: Literal["auto"] | Annotated[int, Strict(), Field(ge=1)] = "auto"
    # probe protocol: ridge penalties tried per attribute (on standardized features), chosen by val Pearson r
    ridge_alphas: list[Annotated[Float, Field(gt=0)]] = Field(
        default_factory=lambda: [10.0**power for power in range(-1, 7)], min_length=1
    )
    # probe protocol: the feature blocks the ridge sees, the ImageNet backbone's first; face_embedding and
    # face_landmarks are dlib's (pip install -e '.[faces]'; docs/real-faces.md). Each block is standardized
    probe_blocks: list[Literal["backbone", "face_embedding", "face_landmarks"]] = Field(
        default_factory=lambda: ["backbone"], min_length=1
    )
    # and weighted by one of these factors against the backbone's 1 (every combination tried, the best mean val r kept)
    probe_block_weights: list[Annotated[Float, Field(gt=0)]] = Field(
        default_factory=lambda: [0.5, 1.0, 2.0, 4.0, 8.0], min_length=1
    )

    # with fit_on train+val, a shared fine-tune's val faces are training faces: also run its schedule on the train faces
    # alone and keep its last epoch's predictions of the val faces (val_predictions.csv), out of sample: what an
    # ensemble's weights are chosen on. A probe and a model fitted on train have these without it (it is ignored)
    holdout_fit: Bool = False

    @property
    def runs_holdout_fit(self) -> bool:
        return self.holdout_fit and self.refits_on_val and self.protocol == "shared"

    @field_validator("probe_blocks")
    @classmethod
    def _backbone_first(cls, blocks: list[str]) -> list[str]:
        if blocks[0] != "backbone" or len(set(blocks)) != len(blocks):
            raise ValueError(f"must start with 'backbone' and name each block once, not {blocks}")
        return blocks

    @property
    def refits_on_val(self) -> bool:
        """The final model learns from the val faces too: nothing is left to score or select on val."""
        return self.fit_on == "train+val"


@dataclass(config=_FORBID_EXTRA, frozen=True)
class FloatRange:
    low: Float
    high: Float
    log: Bool = False

    @model_validator(mode="after")
    def _ordered(self) -> FloatRange:
        if not self.low <= self.high:
            raise ValueError(f"low must not exceed high, got [{self.low}, {self.high}]")
        if self.log and self.low <= 0:
            raise ValueError("a log-scale range needs low > 0")
        return self


@dataclass(config=_FORBID_EXTRA, frozen=True)
class IntRange(FloatRange):
    """An integer range (same checks as FloatRange)."""

    low: Int
    high: Int


@dataclass(config=_FORBID_EXTRA, frozen=True)
class HeadChoice:
    choices: list[Literal["linear", "mlp"]] = Field(min_length=1)


@dataclass(config=_FORBID_EXTRA, frozen=True)
class LossChoice:
    choices: list[Literal["mse", "smooth_l1", "huber", "mse_pearson"]] = Field(min_length=1)


@dataclass(config=_FORBID_EXTRA, frozen=True)
class IntChoice:
    choices: list[Annotated[int, Strict(), Field(ge=1)]] = Field(min_length=1)


@dataclass(config=_FORBID_EXTRA, frozen=True)
class SearchSpace:
    """Each knob is optional; an absent one keeps its params.yaml value in every trial."""

    lr: FloatRange | None = None
    weight_decay: FloatRange | None = None
    dropout: FloatRange | None = None
    head: HeadChoice | None = None
    head_hidden: IntRange | None = None
    loss: LossChoice | None = None
    trainable_blocks: IntRange | None = None
    augment_strength: FloatRange | None = None
    batch_size: IntChoice | None = None


# sweep.space key -> where the value lands in params.yaml
SWEEP_TARGETS: dict[str, tuple[str, ...]] = {
    "lr": ("train", "lr"),
    "weight_decay": ("train", "weight_decay"),
    "dropout": ("model", "dropout"),
    "head": ("model", "head"),
    "head_hidden": ("model", "head_hidden"),
    "loss": ("train", "loss"),
    "trainable_blocks": ("model", "trainable_blocks"),
    "augment_strength": ("train", "augment", "strength"),
    "batch_size": ("train", "batch_size"),
}


@dataclass(config=_FORBID_EXTRA, frozen=True)
class SweepParams:
    n_trials: Int = Field(0, ge=0)
    workers: Int = Field(1, ge=1)
    study: Str = "facetraits"
    storage: Str | None = None
    seed: Int = 42
    pruner: Literal["median", "hyperband", "none"] = "median"
    max_epochs: Int = Field(3, ge=1)
    heartbeat_s: Int = Field(30, ge=1)
    max_retry: Int = Field(1, ge=0)
    space: SearchSpace = Field(default_factory=SearchSpace)


@dataclass(config=_FORBID_EXTRA, frozen=True)
class TrackingParams:
    uri: Str = "sqlite:///mlflow.db"
    experiment: Str = "facetraits"
    artifacts: PathStr = "mlartifacts"
    connect_timeout_s: Float = Field(10.0, gt=0)
    register: bool = True
    alias: Str = Field("champion", pattern=r"^[A-Za-z][\w-]*$")
    system_metrics_s: Float = Field(5.0, ge=0)


MethodName = Literal[
    "gradcam", "guided_gradcam", "integrated_gradients", "gradient_shap", "saliency", "smoothgrad", "region_occlusion"
]
METHOD_NAMES: tuple[str, ...] = get_args(MethodName)


@dataclass(config=_FORBID_EXTRA, frozen=True)
class ExplainParams:
    methods: list[MethodName] = Field(
        default_factory=lambda: ["gradcam", "guided_gradcam", "integrated_gradients", "gradient_shap"]
    )
    attributes: Literal["all"] | list[Str] = "all"
    gradcam_block: Int = Field(5, ge=1, le=5)
    baseline: Literal["blur", "mean"] = "blur"
    blur_sigma: Float = Field(0.1, gt=0, le=1)
    ig_steps: Int = Field(4, ge=2)
    shap_samples: Int = Field(4, ge=1)
    noise_samples: Int = Field(8, ge=1)
    noise_stdev: Float = Field(0.1, ge=0)
    gallery_faces: Int = Field(2, ge=1)
    mean_faces: Int | None = Field(10, ge=1)
    score_faces: Int = Field(5, ge=1)
    curve_steps: Int = Field(8, ge=2)
    randomize_blocks: Int = Field(1, ge=0, le=5)
    sanity_threshold: Float = Field(0.5, ge=-1, le=1)
    batch_size: Int = Field(16, ge=1)
    seed: Int = Field(42, ge=0)  # with each face's row, seeds that face's samples and tie-breaks
    confidence: Float = Field(0.95, gt=0, lt=1)  # of the scores' bootstrap intervals over faces
    bootstrap_resamples: Int = Field(2000, ge=100)
    # per attribute and face region, the drop of the prediction when the region is occluded (any model: no gradient)
    region_importance: bool = True
    region_variants: list[Str] = Field(default_factory=list)  # variants (params.yaml `variants:`) explained so too

    @field_validator("methods")
    @classmethod
    def _methods_unique(cls, methods: list[str]) -> list[str]:
        if not methods or len(set(methods)) != len(methods):
            raise ValueError("must be a non-empty list without repeats")
        return methods

    @model_validator(mode="after")
    def _region_variants_need_regions(self) -> ExplainParams:
        if self.region_variants and not self.region_importance:
            raise ValueError("region_variants are explained by region importance: set region_importance: true")
        return self


@dataclass(config=_FORBID_EXTRA, frozen=True)
class HandcraftedParams:
    hist_bins: Int = Field(16, ge=2)
    lbp_points: Int = Field(8, ge=4)
    lbp_radius: Float = Field(1.0, gt=0)
    hog_orientations: Int = Field(9, ge=2)
    hog_cell: Int = Field(8, ge=2)
    c_grid: list[Annotated[float, Strict(), AllowInfNan(False), Field(gt=0)]] = Field(
        default_factory=lambda: [0.1, 1.0, 10.0], min_length=1
    )
    epsilon: Float = Field(0.1, ge=0)
    gamma: Literal["scale", "auto"] | Annotated[float, Strict(), AllowInfNan(False), Field(gt=0)] = "scale"


@dataclass(config=_FORBID_EXTRA, frozen=True)
class BaselinesParams:
    reliability_repeats: Int = Field(20, ge=1)
    # a rater's second judgement of the same face agrees with the first by more than two raters do
    exclude_rating_types: list[Str] = Field(default_factory=lambda: ["repeat"])
    seed: Int = 42
    workers: Int = Field(1, ge=0)  # processes computing hand-crafted features; 0 = every core
    handcrafted: HandcraftedParams = Field(default_factory=HandcraftedParams)


ManifoldSource = Literal["features", "predicted", "human"]


@dataclass(config=_FORBID_EXTRA, frozen=True)
class ManifoldParams:
    sources: list[ManifoldSource] = Field(default_factory=lambda: ["features", "predicted", "human"], min_length=1)
    methods: list[Literal["pca", "tsne", "umap"]] = Field(default_factory=lambda: ["pca", "tsne", "umap"], min_length=1)
    dims: list[Annotated[int, Strict(), Field(ge=2, le=3)]] = Field(default_factory=lambda: [2, 3], min_length=1)
    perplexity: Float = Field(30.0, gt=0)
    n_neighbors: Int = Field(15, ge=2)
    pca_first: Int = Field(50, ge=2)
    knn_neighbors: Int = Field(10, ge=1)
    folds: Int = Field(5, ge=2)
    pairs: Literal["auto"] | list[Annotated[list[Str], Field(min_length=2, max_length=2)]] = "auto"
    permutations: Int = Field(999, ge=1)
    seed: Int = 42
    workers: Int = Field(0, ge=0)
    # more faces than this: the maps place every test face and a seeded sample of the others up to it (t-SNE and
    # UMAP grow faster than the faces); null = every face
    max_faces: Annotated[int, Strict(), Field(ge=10)] | None = 5000


@dataclass(config=_FORBID_EXTRA, frozen=True)
class ReportParams:
    title: Str = "How people judge faces: model, humans and baselines"
    bootstrap_resamples: Int = Field(10_000, ge=100)  # fewer make the interval's ends jitter from seed to seed
    confidence: Float = Field(0.95, gt=0, lt=1)
    seed: Int = Field(42, ge=0)


@dataclass(config=_FORBID_EXTRA, frozen=True)
class EnsembleParams:
    """Named models combined by weights chosen on their out-of-sample val predictions (the ensemble stage)."""

    # "main" (the train stage's model) and variant names; [] = no ensemble: the stage writes a note, nothing else
    members: list[Str] = Field(default_factory=list)
    # each member's weight is a multiple of this, the weights sum to 1 (every such combination tried)
    weight_step: Float = Field(0.05, gt=0, le=0.5)
    # one weight vector per attribute, or one for all (fewer choices made on the val faces: less overfitting)
    per_attribute: Bool = False

    @field_validator("members")
    @classmethod
    def _two_distinct_members(cls, members: list[str]) -> list[str]:
        if members and (len(members) < 2 or len(set(members)) != len(members)):
            raise ValueError(f"name two or more distinct models (main or variant names), or none, not {members}")
        return members

    @field_validator("weight_step")
    @classmethod
    def _step_divides_one(cls, step: float) -> float:
        if abs(1 / step - round(1 / step)) > 1e-9:
            raise ValueError("must divide 1 into equal steps (0.05, 0.1, 0.25, ...)")
        return step


VARIANT_SECTIONS = ("model", "train")


@dataclass(config=_FORBID_EXTRA, frozen=True)
class StudyParams:
    data: DataParams = Field(default_factory=DataParams)
    face_features: FaceFeaturesParams = Field(default_factory=FaceFeaturesParams)
    model: ModelParams = Field(default_factory=ModelParams)
    train: TrainParams = Field(default_factory=TrainParams)
    sweep: SweepParams = Field(default_factory=SweepParams)
    tracking: TrackingParams = Field(default_factory=TrackingParams)
    explain: ExplainParams = Field(default_factory=ExplainParams)
    baselines: BaselinesParams = Field(default_factory=BaselinesParams)
    manifold: ManifoldParams = Field(default_factory=ManifoldParams)
    report: ReportParams = Field(default_factory=ReportParams)
    variants: dict[Str, dict[str, Any]] = Field(default_factory=dict)
    ensemble: EnsembleParams = Field(default_factory=EnsembleParams)

    @field_validator("variants")
    @classmethod
    def _variant_names_are_plain(cls, variants: dict[str, Any]) -> dict[str, Any]:
        bad = [name for name in variants if not VARIANT_NAME.fullmatch(name)]
        if bad:
            raise ValueError(f"variant name(s) {bad} may hold only letters, digits, '_' and '-'")
        return variants


def _dataclass_in(hint: Any) -> Any:
    """The dataclass an optional field holds (`X | None` -> X), else the hint itself."""
    members = [m for m in get_args(hint) if is_dataclass(m)]
    return members[0] if len(members) == 1 else hint


def _key_path(loc: tuple[Any, ...]) -> tuple[list[str], type | None]:
    """The params.yaml key of an error location, minus pydantic's union-member tags.

    Also returns the dataclass that owns the last key, for did-you-mean hints.
    """
    cls: Any = StudyParams
    keys: list[str] = []
    owner = None
    for part in loc:
        if is_dataclass(cls) and isinstance(part, str):
            keys.append(part)
            owner, cls = cls, _dataclass_in(get_type_hints(cls).get(part))
        elif isinstance(part, int):
            keys.append(str(part))
    return keys, owner


def _format_error(source: str, error: dict[str, Any]) -> str:
    keys, owner = _key_path(tuple(error["loc"]))
    key = ".".join(keys) or "<top level>"
    if error["type"] in ("unexpected_keyword_argument", "extra_forbidden"):
        message = "unknown key"
        if owner is not None:
            close = difflib.get_close_matches(keys[-1], [f.name for f in fields(owner)], n=1)
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
        params = StudyParams(**raw)
    except ValidationError as exc:
        raise ConfigError("\n".join(_format_error(source, e) for e in exc.errors())) from None
    except TypeError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    return _check_ensemble(_check_variants(_check_face_blocks(_check_sweep_space(params, source), source), source), source)


def _check_face_blocks(params: StudyParams, source: str) -> StudyParams:
    """A fused probe reads its face blocks from the face_features stage's output: each must be computed there (a
    variant's are checked as its parameters are, under its own name)."""
    if params.train.protocol != "probe":
        return params
    missing = [block for block in params.train.probe_blocks[1:] if block not in params.face_features.blocks]
    if missing:
        raise ConfigError(
            f"{source}: train.probe_blocks: {missing} not computed: add them to face_features.blocks (the "
            "face_features stage computes them once per prepared data set)"
        )
    return params


def _check_sweep_space(params: StudyParams, source: str) -> StudyParams:
    """Every value a sweep.space range or choice can give must be valid where it lands (lr > 0, ...)."""
    problems = []
    for name, target in SWEEP_TARGETS.items():
        spec = getattr(params.sweep.space, name)
        if spec is None:
            continue
        values = spec.choices if isinstance(spec, HeadChoice | LossChoice | IntChoice) else [spec.low, spec.high]
        for value in values:
            raw = dataclasses.asdict(dataclasses.replace(params, variants={}, sweep=SweepParams()))
            node = raw
            for key in target[:-1]:
                node = node[key]
            node[target[-1]] = value
            try:
                StudyParams(**raw)
            except ValidationError as exc:
                reason = exc.errors()[0]["msg"]
                problems.append(f"{source}: sweep.space.{name}: {value!r} is not a valid {'.'.join(target)}: {reason}")
    if problems:
        raise ConfigError("\n".join(problems))
    return params


def _check_variants(params: StudyParams, source: str) -> StudyParams:
    """Each variant must give valid parameters when applied, and may change only what training reads."""
    problems = []
    for name, overrides in params.variants.items():
        outside = sorted(set(overrides) - set(VARIANT_SECTIONS))
        if outside:
            problems.append(f"{source}: variants.{name}: may change only {list(VARIANT_SECTIONS)}, not {outside}")
            continue
        try:
            variant_params(params, name, source)
        except ConfigError as exc:
            problems.append(str(exc))
    if problems:
        raise ConfigError("\n".join(problems))
    return params


MAIN_MODEL = "main"  # the train stage's model, as ensemble.members and the report's keys name it


def member_params(params: StudyParams, name: str) -> StudyParams:
    """The parameters a named model (`main` or a variant) was trained with."""
    if name == MAIN_MODEL:
        return dataclasses.replace(params, variants={}, ensemble=EnsembleParams())
    return variant_params(params, name)


def _check_ensemble(params: StudyParams, source: str) -> StudyParams:
    """Every member must exist, be one network (a checkpoint the combined model holds) and have val predictions
    from a fit that did not see the val faces."""
    problems = []
    for name in params.ensemble.members:
        if name != MAIN_MODEL and name not in params.variants:
            problems.append(f"'{name}' is neither main nor a variant (variants: {sorted(params.variants)})")
            continue
        train = member_params(params, name).train
        if train.protocol == "per_attribute":
            problems.append(f"'{name}' is one model per attribute (train.protocol: per_attribute); combine shared or probe models")
        elif train.refits_on_val and train.protocol == "shared" and not train.holdout_fit:
            problems.append(
                f"'{name}' is fitted on train+val and has no out-of-sample val predictions: set train.holdout_fit: "
                "true for it (a second fit on the train faces alone)"
            )
    if problems:
        raise ConfigError("\n".join(f"{source}: ensemble.members: {problem}" for problem in problems))
    return params


def variant_params(params: StudyParams, name: str, source: str = "params") -> StudyParams:
    """The study's parameters with one named variant's model/train overrides applied."""
    if name not in params.variants:
        raise ConfigError(f"variants: no variant named '{name}' (known: {sorted(params.variants)})")
    base = dataclasses.replace(params, variants={}, ensemble=EnsembleParams())  # a variant is one model
    return merge_overrides(base, params.variants[name], source=f"{source}: variants.{name}")


def merge_overrides(params: StudyParams, overrides: dict[str, Any], source: str = "overrides") -> StudyParams:
    """params with some keys replaced (e.g. a sweep's best trial), validated like params.yaml itself."""

    def merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
        merged = dict(base)
        for key, value in extra.items():
            merged[key] = merge(base[key], value) if isinstance(value, dict) and isinstance(base.get(key), dict) else value
        return merged

    return parse_params(merge(dataclasses.asdict(params), overrides), source=source)


class _UniqueKeyLoader(yaml.SafeLoader):
    """safe_load keeps the last of two equal keys silently; a parameter file means exactly what it says."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *defaults` keys may be overridden, as YAML means
                continue
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} given twice (lines {seen[key]} and {line})", key_node.start_mark
                )
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


def read_yaml(path: Path | str, what: str = "parameter file") -> Any:
    """A YAML file's content; a missing, unreadable or malformed file, or a repeated key, names the file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: {what} not found") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory, not a {what}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a {what} (not UTF-8 text)") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read {what}: {exc.strerror}") from None
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None


def shared_path(path: str, cwd: Path | None = None) -> str:
    """A relative path as seen from the stage's folder, moved out of a DVC experiment's temporary copy.

    `dvc exp run --queue` (and `--temp`) runs the stages in a copy of the repository under .dvc/tmp/exps/ that is
    deleted afterwards, and sets DVC_ROOT to the repository the experiment was queued from; state shared by every
    run (the MLflow store) belongs there. Unchanged when absolute, outside DVC, and in the workspace itself."""
    root = os.environ.get("DVC_ROOT")
    if not root or Path(path).is_absolute():
        return path
    cwd = Path.cwd() if cwd is None else cwd
    copy = next((folder for folder in (cwd, *cwd.parents) if (folder / ".dvc").is_dir()), None)
    if copy is None or copy.resolve() == Path(root).resolve():
        return path
    return os.path.normpath(Path(root) / cwd.relative_to(copy) / path)


def shared_tracking(tracking: TrackingParams, cwd: Path | None = None) -> TrackingParams:
    """tracking with a local store's relative paths (sqlite:///mlflow.db, mlruns, the artifact root) resolved by
    shared_path: a queued experiment's runs land in the project's store, beside the workspace's."""
    uri = tracking.uri
    if uri.startswith("sqlite:///"):
        uri = "sqlite:///" + shared_path(uri.removeprefix("sqlite:///"), cwd)
    elif "://" not in uri and not uri.startswith("file:"):
        uri = shared_path(uri, cwd)
    return dataclasses.replace(tracking, uri=uri, artifacts=shared_path(tracking.artifacts, cwd))


def load_params(path: Path | str) -> StudyParams:
    """params.yaml, validated; a local MLflow store's relative paths are the project's (shared_tracking)."""
    raw = read_yaml(path)
    if raw is None or raw == {}:
        raise ConfigError(f"{path}: parameter file is empty (expected a mapping of sections, e.g. data:, train:)")
    if isinstance(raw, dict) and "variants" in raw and not raw["variants"]:
        raise ConfigError(
            f"{path}: variants: name at least one variant (dvc.yaml's variant stage and the report read them); "
            "to train none, remove the variant stage and results/variants from dvc.yaml"
        )
    params = parse_params(raw, source=str(path))
    return dataclasses.replace(params, tracking=shared_tracking(params.tracking))
