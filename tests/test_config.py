from pathlib import Path

import pytest

from facetraits.config import StudyParams, load_params, parse_params
from facetraits.errors import ConfigError
from tests.conftest import REPO


def test_repository_params_yaml_is_valid_and_complete() -> None:
    params = load_params(REPO / "params.yaml")
    assert params.data.source == "synthetic"
    assert params.data.split.fractions == pytest.approx((0.64, 0.16, 0.20))
    assert params.tracking.uri.startswith("sqlite:")


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
