from pathlib import Path

import pytest

from facetraits.config import StudyParams, load_params, merge_overrides, parse_params, variant_params
from facetraits.errors import ConfigError
from tests.conftest import REPO, study_params


def test_repository_params_yaml_is_valid_and_complete() -> None:
    params = load_params(REPO / "params.yaml")
    assert params.data.source == "synthetic"
    assert params.data.split.fractions == pytest.approx((0.64, 0.16, 0.20))
    assert params.tracking.uri.startswith("sqlite:")
    assert (params.report.bootstrap_resamples, params.report.confidence) == (10_000, 0.95)


def test_defaults_fill_missing_sections() -> None:
    assert parse_params({}) == StudyParams()


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"data": {"image_sise": 64}}, "data.image_sise: unknown key (did you mean 'image_size'?)"),
        ({"dta": {}}, "dta: unknown key (did you mean 'data'?)"),
        ({"data": {"synthetic": {"n_raterz": 3}}}, "data.synthetic.n_raterz: unknown key"),
        ({"data": {"image_size": "64"}}, "data.image_size: Input should be a valid integer"),
        ({"data": {"image_size": 8}}, "data.image_size: Input should be greater than or equal to 16"),
        ({"data": {"source": "imagenet"}}, "data.source: Input should be"),
        ({"data": {"split": {"train": 0.5, "val": 0.1, "test": 0.1}}}, "data.split: Value error, train + val + test"),
        ({"data": {"attributes": ["happy", "happy"]}}, "data.attributes: Value error, listed more than once"),
        ({"data": {"attributes": []}}, "data.attributes"),
        ({"data": {"csv": {"rating_range": [9, 1]}}}, "data.csv: Value error, rating_range"),
        ({"data": {"on_bad_image": "ignore"}}, "data.on_bad_image"),
        ({"tracking": {"uri": ""}}, "tracking.uri"),
        ({"report": {"confidence": 95}}, "report.confidence: Input should be less than 1, got 95"),
        ({"report": {"confidence": 1.0}}, "report.confidence: Input should be less than 1"),
        ({"report": {"bootstrap_resamples": 10}}, "report.bootstrap_resamples: Input should be greater than or equal"),
    ],
)
def test_bad_values_name_their_key(raw: dict, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_params(raw, source="params.yaml")
    assert message in str(caught.value)
    assert str(caught.value).startswith("params.yaml: ")


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_params({"data": {"image_sise": 1, "workers": -1}})
    assert "data.image_sise" in str(caught.value) and "data.workers" in str(caught.value)


def test_top_level_must_be_a_mapping() -> None:
    with pytest.raises(ConfigError, match="expected a mapping"):
        parse_params(["data"])


def test_malformed_yaml_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text("data:\n  source: [omi\n")
    with pytest.raises(ConfigError, match=f"{path}: not valid YAML"):
        load_params(path)


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="parameter file not found"):
        load_params(tmp_path / "nope.yaml")


def test_params_are_frozen() -> None:
    params = parse_params({})
    with pytest.raises(Exception):
        params.data.image_size = 3  # type: ignore[misc]


def test_sweep_space_ranges_are_typed_and_checked() -> None:
    space = parse_params(
        {"sweep": {"space": {"head_hidden": {"low": 8, "high": 64, "log": True}, "lr": {"low": 1e-4, "high": 1e-2}}}}
    ).sweep.space
    assert (space.head_hidden.low, space.head_hidden.high, space.head_hidden.log) == (8, 64, True)
    assert space.dropout is None
    for bad, message in [
        ({"head_hidden": {"low": 8.5, "high": 64}}, "sweep.space.head_hidden.low: Input should be a valid integer"),
        ({"lr": {"low": 0.0, "high": 1.0, "log": True}}, "sweep.space.lr: Value error, a log-scale range needs low > 0"),
        ({"dropout": {"low": 0.5, "high": 0.1}}, "sweep.space.dropout: Value error, low must not exceed high"),
        ({"head": {"choices": ["transformer"]}}, "sweep.space.head.choices.0"),
        ({"momentum": {"low": 0.1, "high": 0.9}}, "sweep.space.momentum: unknown key"),
    ]:
        with pytest.raises(ConfigError, match=message):
            parse_params({"sweep": {"space": bad}})


def test_overrides_merge_deeply_and_are_validated() -> None:
    params = parse_params({"train": {"lr": 0.1}})
    merged = merge_overrides(params, {"train": {"augment": {"strength": 0.0}}, "model": {"head": "linear"}})
    assert merged.train.augment.strength == 0.0 and merged.train.augment.hflip == 0.5
    assert merged.train.lr == 0.1 and merged.model.head == "linear"
    with pytest.raises(ConfigError, match="best.yaml: train.lr: Input should be greater than 0"):
        merge_overrides(params, {"train": {"lr": -1.0}}, source="best.yaml")


def test_variants_apply_on_top_and_are_validated_like_params_yaml() -> None:
    from facetraits.config import variant_params

    params = study_params(train={"max_epochs": 4}, variants={"resnet": {"model": {"backbone": "resnet18"}}})
    variant = variant_params(params, "resnet")
    assert variant.model.backbone == "resnet18" and variant.train.max_epochs == 4 and variant.variants == {}
    with pytest.raises(ConfigError, match=r"test: variants.bad: may change only \['model', 'train'\], not \['data'\]"):
        study_params(variants={"bad": {"data": {"image_size": 32}}})
    with pytest.raises(ConfigError, match=r"test: variants.typo: train.max_epoch: unknown key \(did you mean 'max_epochs'\?\)"):
        study_params(variants={"typo": {"train": {"max_epoch": 3}}})
    with pytest.raises(ConfigError, match="no variant named 'other'"):
        variant_params(params, "other")


def test_the_repository_params_file_holds_every_stage_section() -> None:

    params = load_params(REPO / "params.yaml")
    assert params.explain.methods == ["gradcam", "guided_gradcam", "integrated_gradients", "gradient_shap"]
    assert params.manifold.methods == ["pca", "tsne", "umap"] and params.manifold.dims == [2, 3]
    assert set(params.variants) == {"imagenet_probe"}


def test_a_probe_block_the_face_features_stage_does_not_compute_is_an_error_naming_its_key() -> None:
    fused = {"protocol": "probe", "probe_blocks": ["backbone", "face_embedding", "face_landmarks"]}
    with pytest.raises(ConfigError, match=r"test: train\.probe_blocks: \['face_embedding', 'face_landmarks'\] not computed: "
                       r"add them to face_features\.blocks"):  # fmt: skip
        study_params(train=fused)
    with pytest.raises(ConfigError, match=r"test: variants\.fused: train\.probe_blocks: \['face_landmarks'\] not computed"):
        study_params(face_features={"blocks": ["face_embedding"]}, variants={"fused": {"train": fused}})
    computed = study_params(face_features={"blocks": ["face_landmarks", "face_embedding"]}, variants={"fused": {"train": fused}})
    assert computed.face_features.undetected == "whole_image" and computed.face_features.workers == 0
    with pytest.raises(ConfigError, match=r"face_features\.blocks: .*name each block once"):
        study_params(face_features={"blocks": ["face_embedding", "face_embedding"]})
    with pytest.raises(ConfigError, match=r"face_features\.blocks\.0: "):
        study_params(face_features={"blocks": ["face_mesh"]})


def test_ensemble_members_must_exist_be_one_network_and_have_out_of_sample_val_predictions() -> None:
    probe = {"probe": {"train": {"protocol": "probe", "fit_on": "train+val"}}}
    params = study_params(variants=probe, ensemble={"members": ["main", "probe"]})
    assert params.ensemble.members == ["main", "probe"] and params.ensemble.weight_step == 0.05
    with pytest.raises(ConfigError, match=r"test: ensemble.members: 'other' is neither main nor a variant \(variants: \['probe'\]\)"):
        study_params(variants=probe, ensemble={"members": ["main", "other"]})
    with pytest.raises(ConfigError, match=r"ensemble.members: .*name two or more distinct models"):
        study_params(ensemble={"members": ["main"]})
    with pytest.raises(ConfigError, match=r"ensemble.members: .*name two or more distinct models"):
        study_params(variants=probe, ensemble={"members": ["probe", "probe"]})
    with pytest.raises(ConfigError, match=r"'main' is one model per attribute"):
        study_params(train={"protocol": "per_attribute"}, variants=probe, ensemble={"members": ["main", "probe"]})
    refit = {"fit_on": "train+val"}
    with pytest.raises(ConfigError, match=r"'main' is fitted on train\+val .* set train.holdout_fit: true for it"):
        study_params(train=refit, variants=probe, ensemble={"members": ["main", "probe"]})
    # the variant inherits holdout_fit; it is ignored by a probe, which has its train-only ridge's predictions
    held = study_params(train={**refit, "holdout_fit": True}, variants=probe, ensemble={"members": ["main", "probe"]})
    assert held.train.runs_holdout_fit and not variant_params(held, "probe").train.runs_holdout_fit
    with pytest.raises(ConfigError, match=r"ensemble.weight_step: .*must divide 1 into equal steps"):
        study_params(ensemble={"weight_step": 0.3})
