"""Bad inputs not covered by the module tests: NaN ratings, malformed parameter files, foreign or malicious models.

docs/bad-inputs.md lists every bad input the project is tested with and the test that covers it.
"""

from __future__ import annotations

import pathlib
import pickle
import runpy
import subprocess
import time
from pathlib import Path

import lightning as L
import mlflow.pytorch
import mlflow.sklearn
import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from PIL import Image
from sklearn.linear_model import LinearRegression
from torchvision import models

from facetraits.cli import main as cli
from facetraits.config import StudyParams
from facetraits.data.prepare import prepare_dataset
from facetraits.data.prepared import PreparedData, load_prepared
from facetraits.data.sources import read_source
from facetraits.errors import ConfigError, DataError
from facetraits.models.components.backbones import build_backbone
from facetraits.models.face_module import load_module
from facetraits.models.training import build_module, fit_attributes
from tests.conftest import REPO, study_params
from tests.fixtures.layouts import make_csv

prepare_stage = runpy.run_path(str(REPO / "pipelines" / "prepare.py"))["main"]
train_stage = runpy.run_path(str(REPO / "pipelines" / "train.py"))["main"]


# --- NaN and infinite ratings ---------------------------------------------------------------------------------------


def _csv_params(root: Path, ratings: str | None = None):
    return study_params(data={"source": "csv", "path": str(root), "image_size": 32, "csv": {"ratings": ratings}}).data


def _set_cell(path: Path, row: int, column: str, value: str) -> None:
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    table.loc[row, column] = value
    table.to_csv(path, index=False)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("NaN", r"column 'happy': non-numeric rating at row 4 \('NaN'\)"),
        ("nan", r"column 'happy': non-numeric rating at row 4 \('nan'\)"),
        ("NA", r"column 'happy': non-numeric rating at row 4 \('NA'\)"),
        ("inf", r"column 'happy': rating outside the scale \[1, 9\] at row 4 \(inf\)"),
        ("-inf", r"column 'happy': rating outside the scale \[1, 9\] at row 4 \(-inf\)"),
    ],
    ids=["NaN", "nan", "NA", "inf", "-inf"],
)
def test_nan_or_infinite_mean_rating_names_file_row_and_column(tmp_path: Path, value: str, message: str) -> None:
    make_csv(tmp_path, with_ratings=False)
    _set_cell(tmp_path / "faces.csv", 2, "happy", value)
    with pytest.raises(DataError, match=rf"{tmp_path / 'faces.csv'}: {message}"):
        read_source(_csv_params(tmp_path))


@pytest.mark.parametrize(
    ("value", "message"),
    [("NaN", r"column 'rating': non-numeric rating at row 5 \('NaN'\)"), ("", "empty rating at row 5")],
    ids=["nan-text", "empty"],
)
def test_nan_or_empty_single_rating_names_the_row(tmp_path: Path, value: str, message: str) -> None:
    make_csv(tmp_path)
    _set_cell(tmp_path / "ratings.csv", 3, "rating", value)
    with pytest.raises(DataError, match=rf"{tmp_path / 'ratings.csv'}: {message}"):
        read_source(_csv_params(tmp_path, ratings="ratings.csv"))


def test_empty_mean_cells_are_missing_ratings_kept_as_nan(tmp_path: Path) -> None:
    fixture = make_csv(tmp_path / "csv", with_ratings=False)
    for row in (1, 5, 9):
        _set_cell(tmp_path / "csv" / "faces.csv", row, "happy", "")
    report = prepare_dataset(_csv_params(tmp_path / "csv"), tmp_path / "out", progress=False)
    faces = load_prepared(tmp_path / "out").faces.set_index("id")
    missing = [fixture.ids[row] for row in (1, 5, 9)]
    assert faces.loc[missing, "happy"].isna().all() and faces["happy"].notna().sum() == len(fixture.ids) - 3
    assert faces["trustworthy"].notna().all()
    assert report.metrics()["attributes"]["happy"]["missing"] == 3


def test_an_attribute_without_ratings_is_refused_before_training(tmp_path: Path) -> None:
    make_csv(tmp_path / "csv", with_ratings=False)
    table = pd.read_csv(tmp_path / "csv" / "faces.csv", dtype=str)
    table["happy"] = ""
    table.to_csv(tmp_path / "csv" / "faces.csv", index=False)
    with pytest.raises(DataError, match="happy"):
        prepare_dataset(_csv_params(tmp_path / "csv"), tmp_path / "out", progress=False)


# --- malformed parameter files --------------------------------------------------------------------------------------

MALFORMED_PARAMS = [
    ("data:\n  image_size: [64\n", "not valid YAML: while parsing a flow sequence"),
    ("data:\n  image_size: large\n", "data.image_size: Input should be a valid integer, got 'large'"),
    ("train:\n  max_epoch: 3\n", "train.max_epoch: unknown key (did you mean 'max_epochs'?)"),
    ("- data\n- train\n", "expected a mapping of sections at the top level, got list"),
]


@pytest.mark.parametrize(
    ("text", "message"), MALFORMED_PARAMS, ids=["yaml-syntax", "wrong-type", "unknown-key", "list"]
)
def test_malformed_params_yaml_stops_the_cli_and_a_stage_naming_file_and_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, message: str
) -> None:
    params = tmp_path / "params.yaml"
    params.write_text(text)
    assert cli(["check-params", str(params)]) == 1
    assert capsys.readouterr().err.startswith(f"error: {params}: {message}")
    out = tmp_path / "prepared"
    assert prepare_stage(["--params", str(params), "--out", str(out), "--summary", str(tmp_path / "p.json")]) == 1
    assert capsys.readouterr().err.startswith(f"error: {params}: {message}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"], "nothing is written"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("overrides: {train: {lr: [0.1}\n", "not valid YAML"),
        ("- 0.1\n", "expected a mapping with an 'overrides' mapping"),
        ("overrides: {train: {lr: fast}}\n", "train.lr: Input should be a valid number, got 'fast'"),
        ("overrides: {train: {learning_rate: 0.1}}\n", "train.learning_rate: unknown key"),
    ],
    ids=["yaml-syntax", "not-a-mapping", "wrong-type", "unknown-key"],
)
def test_malformed_best_params_stop_the_train_stage_naming_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, message: str
) -> None:
    (tmp_path / "params.yaml").write_text("train: {max_epochs: 1}\n")
    best = tmp_path / "best_params.yaml"
    best.write_text(text)
    args = ["--params", str(tmp_path / "params.yaml"), "--prepared", str(tmp_path / "none"), "--models",
            str(tmp_path / "models"), "--out", str(tmp_path / "results"), "--best-params", str(best)]  # fmt: skip
    assert train_stage(args) == 1
    assert capsys.readouterr().err.startswith(f"error: {best}: {message}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best_params.yaml", "params.yaml"]


def test_unreachable_tracking_server_stops_a_stage_within_seconds(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"tracking": {"uri": "http://127.0.0.1:9", "connect_timeout_s": 2.0}}))
    started = time.monotonic()
    assert (
        prepare_stage(["--params", str(params), "--out", str(tmp_path / "out"), "--summary", str(tmp_path / "p.json")])
        == 1
    )
    assert time.monotonic() - started < 10
    assert capsys.readouterr().err.startswith("error: tracking.uri: MLflow server http://127.0.0.1:9 is unreachable")
    assert not (tmp_path / "out").exists()


# --- checkpoints and models: foreign, corrupt or carrying code ------------------------------------------------------


class _Payload:
    """Unpickling this touches `sentinel`: proof that a loader ran code from the file."""

    def __init__(self, sentinel: Path) -> None:
        self.sentinel = sentinel

    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path(self.sentinel),))


@pytest.fixture
def malicious(tmp_path: Path) -> tuple[Path, Path]:
    """A checkpoint-looking file whose unpickling runs code, and the file that code would create."""
    sentinel = tmp_path / "payload-ran"
    path = tmp_path / "malicious.ckpt"
    torch.save({"epoch": 0, "state_dict": {}, "hyper_parameters": _Payload(sentinel)}, path)
    return path, sentinel


def test_the_payload_runs_when_unpickled_without_weights_only(malicious: tuple[Path, Path]) -> None:
    path, sentinel = malicious
    torch.load(path, weights_only=False)
    assert sentinel.exists(), "the other tests' payload checks would prove nothing"


TINY = {
    "data": {"image_size": 32, "attributes": ["happy"], "synthetic": {"n_faces": 16}},
    "model": {"backbone": "resnet18", "head_hidden": 4, "trainable_blocks": 0},
    "train": {"max_epochs": 1, "batch_size": 8, "progress_bar": False},
}


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> tuple[StudyParams, PreparedData]:
    params = study_params(**TINY)
    out = tmp_path_factory.mktemp("tiny") / "prepared"
    prepare_dataset(params.data, out, progress=False)
    return params, load_prepared(out)


class _Stopped(Exception):
    pass


class _StopAtTrainStart(L.Callback):
    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        raise _Stopped


def _interrupted_run(tiny_data: tuple[StudyParams, PreparedData], checkpoint_dir: Path) -> None:
    """What a killed run leaves for resume: train_state.json of this configuration, marked incomplete."""
    params, data = tiny_data
    with pytest.raises(_Stopped):
        fit_attributes(
            data, data.attributes, params.model, params.train, checkpoint_dir, extra_callbacks=[_StopAtTrainStart()]
        )
    assert (checkpoint_dir / "train_state.json").is_file()


@pytest.fixture(scope="module")
def resnet_checkpoint(tiny_data: tuple[StudyParams, PreparedData], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A genuine facetraits checkpoint of a resnet18 model."""
    params, data = tiny_data
    module = build_module(data, data.attributes, params.model, params.train)
    path = tmp_path_factory.mktemp("resnet") / "resnet18.ckpt"
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)}, path)
    return path


def test_malicious_checkpoint_never_runs_in_load_module(malicious: tuple[Path, Path]) -> None:
    path, sentinel = malicious
    with pytest.raises(ConfigError, match=rf"{path}: not a loadable facetraits checkpoint: Weights only load failed"):
        load_module(path)
    assert not sentinel.exists()


def test_malicious_weights_file_never_runs_in_build_backbone(malicious: tuple[Path, Path]) -> None:
    path, sentinel = malicious
    with pytest.raises(ConfigError, match=rf"model.weights: {path} is not a loadable state dict"):
        build_backbone("vgg16_bn", str(path), 1, 32)
    assert not sentinel.exists()


def test_malicious_last_checkpoint_never_runs_on_resume(
    tiny_data, malicious: tuple[Path, Path], tmp_path: Path
) -> None:
    path, sentinel = malicious
    _interrupted_run(tiny_data, tmp_path / "models")
    (tmp_path / "models" / "last.ckpt").write_bytes(path.read_bytes())
    params, data = tiny_data
    with pytest.raises((pickle.UnpicklingError, ConfigError)):
        fit_attributes(data, data.attributes, params.model, params.train, tmp_path / "models")
    assert not sentinel.exists()


@pytest.mark.parametrize("damage", ["truncated", "malicious"])
def test_unloadable_last_checkpoint_stops_resume_naming_it(tiny_data, malicious, tmp_path: Path, damage: str) -> None:
    _interrupted_run(tiny_data, tmp_path / "models")
    last = tmp_path / "models" / "last.ckpt"
    source = malicious[0] if damage == "malicious" else None
    last.write_bytes(source.read_bytes() if source is not None else b"PK\x03\x04 truncated")
    params, data = tiny_data
    with pytest.raises(ConfigError, match=rf"{last}: .*train.resume: false"):
        fit_attributes(data, data.attributes, params.model, params.train, tmp_path / "models")


def test_checkpoint_whose_weights_are_another_backbone_is_refused(resnet_checkpoint: Path, tmp_path: Path) -> None:
    content = torch.load(resnet_checkpoint, weights_only=True)
    content["hyper_parameters"]["model"]["backbone"] = "vgg16_bn"
    path = tmp_path / "says_vgg16_bn.ckpt"
    torch.save(content, path)
    with pytest.raises(ConfigError, match=rf"{path}: weights do not fit the model it describes: Error\(s\) in loading"):
        load_module(path)


def test_facetraits_checkpoint_as_backbone_weights_of_another_architecture(resnet_checkpoint: Path) -> None:
    with pytest.raises(ConfigError, match=rf"model.weights: {resnet_checkpoint} does not fit a torchvision vgg16_bn"):
        build_backbone("vgg16_bn", str(resnet_checkpoint), 1, 32)


@pytest.fixture
def face(tmp_path: Path) -> Path:
    path = tmp_path / "face.png"
    Image.fromarray(np.full((24, 20, 3), 128, dtype=np.uint8)).save(path)
    return path


def _predict(face: Path, model: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = cli(["predict", str(face), "--model", str(model)])
    return code, capsys.readouterr().err


def test_predict_refuses_models_of_another_kind(
    face: Path, tmp_path: Path, malicious: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    torchvision_weights = tmp_path / "resnet18.pt"
    torch.save(models.resnet18().state_dict(), torchvision_weights)
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(torchvision_weights.read_bytes()[:4096])
    sklearn_model = tmp_path / "sklearn-model"
    mlflow.sklearn.save_model(
        LinearRegression().fit([[0.0], [1.0]], [0.0, 1.0]), sklearn_model, pip_requirements=["scikit-learn"]
    )
    capsys.readouterr()
    expected = {
        torchvision_weights: f"error: {torchvision_weights}: not a facetraits checkpoint (hyper_parameters lack",
        truncated: f"error: {truncated}: not a loadable facetraits checkpoint: PytorchStreamReader failed",
        malicious[0]: f"error: {malicious[0]}: not a loadable facetraits checkpoint: Weights only load failed",
        sklearn_model: f"error: --model: '{sklearn_model}' is neither a checkpoint file nor a loadable MLflow model: "
        "no pytorch flavor in",
    }
    for model, message in expected.items():
        code, err = _predict(face, model, capsys)
        assert code == 1 and err.startswith(message), err
    assert not malicious[1].exists()


def test_predict_never_runs_code_from_a_pickled_mlflow_model(
    face: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder, sentinel = tmp_path / "pickled-model", tmp_path / "payload-ran"
    mlflow.pytorch.save_model(torch.nn.Linear(2, 2), folder, serialization_format="pickle", pip_requirements=["torch"])
    torch.save(_Payload(sentinel), folder / "data" / "model.pth")
    capsys.readouterr()  # MLflow's warning about saving in pickle format
    try:
        code, err = _predict(face, folder, capsys)
    finally:
        assert not sentinel.exists(), "the model file's code ran"
    assert code == 1 and err.startswith(f"error: --model: MLflow model '{folder}' refused before loading: "), err


def test_predict_refuses_an_image_whose_padded_canvas_is_over_the_pixel_limit(
    resnet_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A 1x60000 PNG is 60,000 pixels in a few hundred bytes; padded square it would be a 10.8 GB canvas."""
    thin = tmp_path / "thin.png"
    Image.new("RGB", (1, 60000)).save(thin)
    code, err = _predict(thin, resnet_checkpoint, capsys)
    assert code == 1 and err.splitlines() == [
        f"error: {thin}: image is 1x60000; padded square it is 60000x60000 = 3600000000 pixels, "
        "over data.max_image_pixels = 40000000"
    ]


def test_predict_to_a_folder_is_one_error_line_naming_it(
    face: Path, resnet_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An OSError on a path the user gave (here --out a folder) is the contract's `error:` line, not a traceback."""
    folder = tmp_path / "a-folder"
    folder.mkdir()
    assert cli(["predict", str(face), "--model", str(resnet_checkpoint), "--out", str(folder)]) == 1
    assert capsys.readouterr().err.splitlines() == [f"error: {folder}: Is a directory"]


def test_what_a_killed_atomic_write_leaves_is_ignored_by_git_and_dvc() -> None:
    """After a SIGKILL the `.<name>.<random>.tmp` sibling of an output stays until the stage runs again: `git add -A`
    must not commit it, nor DVC hash it into a folder output."""
    leftovers = [".params.yaml.k2j3.tmp", "studies/omi/results/.report.md.x81.tmp", "src/.a.old-12.tmp"]
    command = ["git", "check-ignore", "--no-index", *leftovers]
    ignored = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=False)
    assert ignored.stdout.split() == leftovers
    assert ".*.tmp" in (REPO / ".dvcignore").read_text().splitlines()
