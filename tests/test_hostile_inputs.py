"""Hostile inputs (issue 13): inputs that would run code, give silent wrong results or unclear errors.

Each test reproduces the hostile input and asserts the clear error or the correct result; docs/bad-inputs.md
names them row by row.
"""

from __future__ import annotations

import gzip
import re
import sys
import uuid
from pathlib import Path

import mlflow
import mlflow.pytorch
import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from PIL import Image

from facetraits.cli import main as cli
from facetraits.config import load_params, parse_params
from facetraits.data import synthetic
from facetraits.data.face_datamodule import FaceDataModule, lone_last_face
from facetraits.data.images import load_face
from facetraits.data.prepare import prepare_dataset
from facetraits.data.prepared import load_prepared
from facetraits.data.sources import read_source
from facetraits.data.sources.base import ATTRIBUTE_NAME
from facetraits.data.sources.cfd import RATING_COLUMNS as CFD_ATTRIBUTES
from facetraits.errors import ConfigError, DataError
from facetraits.models.training import fit_attributes
from facetraits.predict import _PICKLE_SWITCH, load_predictor, predict_files
from facetraits.spreadsheet import spreadsheet_safe, write_csv
from facetraits.tracking import mlflow_environment
from tests.conftest import OMI_DEV, REPO, study_params
from tests.fixtures.layouts import US10K_ATTRIBUTES, make_csv, make_omi, make_us10k

# --- 1. MLflow models that would run code -----------------------------------------------------------------------------


class _Mean(torch.nn.Module):
    """A stand-in for a trained net: image batch -> one rating."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return images.mean(dim=(1, 2, 3)).unsqueeze(1) * 10


def _safe_model(folder: Path) -> Path:
    """The format facetraits logs: torch.export (pt2), no code folder, facetraits metadata."""
    example = torch.rand(2, 3, 16, 16).numpy()
    mlflow.pytorch.save_model(
        _Mean(), folder, input_example=example, pip_requirements=["torch"], metadata={"attributes": ["happy"], "image_size": 16}
    )
    return folder


def _code_carrying_model(folder: Path, marker: Path) -> tuple[Path, str]:
    """A model folder whose MLmodel names `code: code` and whose pickle_module_info.txt names a module there."""
    _safe_model(folder)
    module = f"payload_{uuid.uuid4().hex}"
    (folder / "code").mkdir()
    (folder / "code" / f"{module}.py").write_text(f"import pathlib\npathlib.Path({str(marker)!r}).touch()\n")
    (folder / "data" / "pickle_module_info.txt").write_text(module)
    (folder / "data" / "model.pth").write_bytes(b"not reached")
    mlmodel = yaml.safe_load((folder / "MLmodel").read_text())
    mlmodel["flavors"]["pytorch"]["code"] = "code"
    (folder / "MLmodel").write_text(yaml.safe_dump(mlmodel))
    return folder, module


@pytest.fixture
def face(tmp_path: Path) -> Path:
    path = tmp_path / "face.png"
    Image.fromarray(np.full((20, 20, 3), 128, dtype=np.uint8)).save(path)
    return path


def test_control_mlflow_itself_imports_the_code_of_such_a_model(tmp_path: Path) -> None:
    folder, module = _code_carrying_model(tmp_path / "model", tmp_path / "ran")
    # MLflow >= 3.18 refuses pickle unless code execution is allowed: a user (or a shared environment) that allows
    # it for one model opens the hole for every model
    allowed = {"MLFLOW_ALLOW_MODEL_CODE_EXECUTION": "true", _PICKLE_SWITCH: "true"}
    with mlflow_environment(**allowed), pytest.raises(Exception):
        mlflow.pytorch.load_model(str(folder))
    sys.modules.pop(module, None)
    assert (tmp_path / "ran").exists(), "the hole this project closes: MLflow ran the model's code"


def test_predict_refuses_a_code_carrying_mlflow_model_before_mlflow_touches_it(
    tmp_path: Path, face: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder, _ = _code_carrying_model(tmp_path / "model", tmp_path / "ran")
    assert cli(["predict", str(face), "--model", str(folder)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: --model: MLflow model '{folder}' refused before loading: flavor 'pytorch' names code")
    assert "pickle-format files ['model.pth', 'pickle_module_info.txt']" in err
    assert not (tmp_path / "ran").exists()


def test_runs_uri_is_downloaded_and_inspected_before_loading(
    tmp_path: Path, face: Path, tracking, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking.uri)
    experiment = mlflow.set_experiment(tracking.experiment).experiment_id
    bad, _ = _code_carrying_model(tmp_path / "bad", tmp_path / "ran")
    good = _safe_model(tmp_path / "good")
    with mlflow.start_run(experiment_id=experiment) as run:
        mlflow.log_artifacts(str(bad), "bad")
        mlflow.log_artifacts(str(good), "good")
    assert cli(["predict", str(face), "--model", f"runs:/{run.info.run_id}/bad"]) == 1
    assert "refused before loading" in capsys.readouterr().err
    assert not (tmp_path / "ran").exists()
    predictor = load_predictor(f"runs:/{run.info.run_id}/good")
    table = predict_files(predictor, [face])
    assert predictor.attributes == ("happy",) and table["happy"].iloc[0] == pytest.approx(128 / 255 * 10, abs=1e-4)


def test_the_format_facetraits_logs_is_still_accepted(tmp_path: Path, face: Path) -> None:
    predictor = load_predictor(str(_safe_model(tmp_path / "model")))
    assert predict_files(predictor, [face])["happy"].iloc[0] == pytest.approx(128 / 255 * 10, abs=1e-4)


def test_model_a_text_file_says_it_is_not_a_checkpoint(tmp_path: Path, face: Path, capsys) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("hello\n")
    assert cli(["predict", str(face), "--model", str(text)]) == 1
    assert capsys.readouterr().err == f"error: {text}: not a facetraits checkpoint (a checkpoint is a torch.save zip archive)\n"


def test_predict_batch_size_must_be_positive(face: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stopped:
        cli(["predict", str(face), "--batch-size", "0"])
    assert stopped.value.code == 2
    assert "argument --batch-size: expected a whole number >= 1, got 0" in capsys.readouterr().err


# --- 2. names that become paths or shell words --------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["x;touch owned;#", "../../x", "a b", "$(id)", "a/b"])
def test_variant_names_that_are_not_plain_words_are_refused(name: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_params({"variants": {name: {"model": {"backbone": "resnet18"}}}}, source="params.yaml")
    assert f"params.yaml: variants: Value error, variant name(s) [{name!r}] may hold only letters, digits" in str(
        caught.value
    )


def test_an_empty_variants_mapping_is_refused_naming_the_key(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text("data: {image_size: 32}\nvariants: {}\n")
    with pytest.raises(ConfigError, match=rf"{path}: variants: name at least one variant"):
        load_params(path)


@pytest.mark.parametrize("name", ["<script>", "a/b", "..", "../x", ".hidden", "happy ", "x;rm"])
def test_attribute_names_that_would_escape_a_path_are_refused_naming_file_and_column(tmp_path: Path, name: str) -> None:
    make_csv(tmp_path, with_ratings=False)
    table = pd.read_csv(tmp_path / "faces.csv", dtype=str, keep_default_na=False)
    table.rename(columns={"happy": name}).to_csv(tmp_path / "faces.csv", index=False)
    with pytest.raises(DataError) as caught:
        read_source(study_params(data={"source": "csv", "path": str(tmp_path)}).data)
    assert str(caught.value).startswith(f"{tmp_path / 'faces.csv'}: attribute column(s) [{name!r}]: a name may hold only")


def test_every_real_attribute_name_is_admitted() -> None:
    names = [*US10K_ATTRIBUTES, *CFD_ATTRIBUTES, *synthetic.ATTRIBUTES, "well-groomed", "looks-like-you", "Trust worthy"]
    if (OMI_DEV / "attribute_means.csv").is_file():
        names += list(pd.read_csv(OMI_DEV / "attribute_means.csv", nrows=0).columns[1:])
    assert [n for n in names if not ATTRIBUTE_NAME.fullmatch(n)] == []


# --- 3. images deeper than 8 bits ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("suffix", "dtype", "levels", "expected"),
    [
        (".png", np.uint16, (16384, 49152), (64, 191)),
        (".tif", np.uint16, (16384, 49152), (64, 191)),
        (".tif", np.float32, (0.25, 0.75), (64, 191)),
        (".tif", np.int32, (2**29, 2**30), (32, 64)),
    ],
    ids=["png-16bit", "tiff-16bit", "tiff-float32", "tiff-int32"],
)
def test_deep_grey_images_keep_their_grey_level(tmp_path: Path, suffix: str, dtype, levels, expected) -> None:
    pixels = []
    for level in levels:
        path = tmp_path / f"grey-{level}{suffix}"
        Image.fromarray(np.full((24, 24), level, dtype=dtype)).save(path)
        pixels.append(load_face(path, 16, "pad", 10_000)[8, 8])
    assert pixels[0].tolist() != pixels[1].tolist()
    assert [int(p[0]) for p in pixels] == pytest.approx(list(expected), abs=1)


def test_float_image_outside_zero_one_is_refused_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "hdr.tif"
    Image.fromarray(np.full((8, 8), 300.0, dtype=np.float32)).save(path)
    with pytest.raises(DataError, match=re.escape(f"{path}: floating-point image with values in [300, 300]")):
        load_face(path, 16, "pad", 10_000)


# --- 4. repeated columns and 6. NA text in every reader -----------------------------------------------------------------


def _repeat_column(path: Path, column: str, compression: str | None = None) -> None:
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    names = list(table.columns)
    table = pd.concat([table, table[[column]]], axis=1)
    table.columns = [*names, column]
    table.to_csv(path, index=False, compression=compression)


def test_repeated_column_in_a_csv_table_is_refused_naming_file_and_column(tmp_path: Path) -> None:
    make_csv(tmp_path, with_ratings=True)
    _repeat_column(tmp_path / "faces.csv", "happy")
    with pytest.raises(DataError, match=re.escape(f"{tmp_path / 'faces.csv'}: column(s) ['happy'] appear more than once")):
        read_source(study_params(data={"source": "csv", "path": str(tmp_path)}).data)


def test_repeated_column_in_omi_means_and_raw_ratings_is_refused(tmp_path: Path) -> None:
    make_omi(tmp_path / "a", n_faces=6)
    _repeat_column(tmp_path / "a" / "attribute_means.csv", "happy")
    with pytest.raises(DataError, match=re.escape("attribute_means.csv: column(s) ['happy'] appear more than once")):
        read_source(study_params(data={"source": "omi", "path": str(tmp_path / "a")}).data)
    make_omi(tmp_path / "b", n_faces=6)
    _repeat_column(tmp_path / "b" / "attribute_ratings.csv.gz", "rating", compression="gzip")
    with pytest.raises(DataError, match=re.escape("attribute_ratings.csv.gz: column(s) ['rating'] appear more than once")):
        read_source(study_params(data={"source": "omi", "path": str(tmp_path / "b")}).data)


def test_repeated_attribute_column_in_a_us10k_table_is_refused_but_rater_columns_may_repeat(tmp_path: Path) -> None:
    fixture = make_us10k(tmp_path, n_faces=6, table="csv")
    table_file = next(tmp_path.rglob("psychology-attributes.csv"))
    text = table_file.read_text()
    table_file.write_text(text.replace(",catch.1,", ",catch,", 1))  # the real header repeats rater columns
    assert read_source(study_params(data={"source": "us10k", "path": str(fixture.root), "us10k": {"table": str(table_file.relative_to(fixture.root))}}).data)
    _repeat_column(table_file, "happy")
    with pytest.raises(DataError, match=re.escape(f"{table_file}: column(s) ['happy'] appear more than once")):
        read_source(study_params(data={"source": "us10k", "path": str(fixture.root), "us10k": {"table": str(table_file.relative_to(fixture.root))}}).data)


@pytest.mark.parametrize("text", ["NA", "NaN", "null", "N/A", "#N/A"])
def test_omi_means_cell_written_as_na_text_is_refused_not_read_as_missing(tmp_path: Path, text: str) -> None:
    make_omi(tmp_path, n_faces=6)
    means = tmp_path / "attribute_means.csv"
    table = pd.read_csv(means, dtype=str, keep_default_na=False)
    table.loc[2, "happy"] = text
    table.to_csv(means, index=False)
    with pytest.raises(DataError, match=re.escape(f"{means}: column 'happy': non-numeric rating at row 4 ({text!r})")):
        read_source(study_params(data={"source": "omi", "path": str(tmp_path)}).data)


def test_omi_raw_rating_written_as_na_text_is_refused(tmp_path: Path) -> None:
    make_omi(tmp_path, n_faces=6)
    raw = tmp_path / "attribute_ratings.csv.gz"
    table = pd.read_csv(raw, dtype=str, keep_default_na=False)
    table.loc[0, "rating"] = "NA"
    table.to_csv(raw, index=False, compression="gzip")
    with pytest.raises(DataError, match=re.escape(f"{raw}: column 'rating': non-numeric rating at row 2 ('NA')")):
        read_source(study_params(data={"source": "omi", "path": str(tmp_path)}).data)


def test_one_image_file_under_two_ids_is_refused(tmp_path: Path) -> None:
    fixture = make_csv(tmp_path, with_ratings=False, subdirs=False)
    table = pd.read_csv(tmp_path / "faces.csv", dtype=str, keep_default_na=False)
    table["id"] = [f"face-{i}" for i in range(len(table))]
    table.loc[3, "image"] = f"./{fixture.ids[0]}"
    table.to_csv(tmp_path / "faces.csv", index=False)
    with pytest.raises(DataError, match=re.escape(f"column 'image': row 2 and row 5 name the same image file './{fixture.ids[0]}'")):
        read_source(study_params(data={"source": "csv", "path": str(tmp_path), "csv": {"id_column": "id"}}).data)


# --- 7. parameter files mean exactly what they say -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "parameter file is empty"),
        ("# only a comment\n", "parameter file is empty"),
        ("{}\n", "parameter file is empty"),
        ("train:\n  lr: 0.1\ntrain:\n  lr: 0.5\n", "key 'train' given twice (lines 1 and 3)"),
        ("train:\n  lr: 0.1\n  lr: 0.5\n", "key 'lr' given twice (lines 2 and 3)"),
        (b"\x89PNG\r\n\x1a\n\x00\xff\xfe", "not a parameter file (not UTF-8 text)"),
    ],
    ids=["empty", "comment-only", "empty-mapping", "repeated-section", "repeated-key", "binary"],
)
def test_parameter_file_that_does_not_say_one_thing_is_refused(tmp_path: Path, content, message: str) -> None:
    path = tmp_path / "params.yaml"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(ConfigError) as caught:
        load_params(path)
    assert str(caught.value).startswith(f"{path}: ") and message in str(caught.value)


def test_check_params_on_a_directory_or_binary_file_names_it(tmp_path: Path, capsys) -> None:
    assert cli(["check-params", str(tmp_path)]) == 1
    assert capsys.readouterr().err == f"error: {tmp_path}: is a directory, not a parameter file\n"
    binary = tmp_path / "model.ckpt"
    binary.write_bytes(b"PK\x03\x04\xff\xfe\x00")
    assert cli(["check-params", str(binary)]) == 1
    assert capsys.readouterr().err == f"error: {binary}: not a parameter file (not UTF-8 text)\n"


def test_explain_with_a_missing_params_file_is_refused(tmp_path: Path, face: Path, capsys) -> None:
    missing = tmp_path / "nope.yaml"
    assert cli(["explain", str(face), "--attribute", "happy", "--params", str(missing), "--model", str(face)]) == 1
    assert capsys.readouterr().err == f"error: {missing}: parameter file not found\n"


def test_best_params_with_a_repeated_key_is_refused(tmp_path: Path) -> None:
    from facetraits.sweep.outputs import read_best_params

    path = tmp_path / "best_params.yaml"
    path.write_text("overrides:\n  train: {lr: 0.1}\n  train: {lr: 0.2}\n")
    with pytest.raises(ConfigError, match=re.escape(f"{path}: not valid YAML: key 'train' given twice (lines 2 and 3)")):
        read_best_params(path)


# --- 8. non-finite and non-positive numbers -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("yaml_text", "key"),
    [
        ("train: {lr: .inf}", "train.lr"),
        ("train: {lr: .nan}", "train.lr"),
        ("train: {pearson_weight: .inf}", "train.pearson_weight"),
        ("train: {augment: {strength: .nan}}", "train.augment.strength"),
        ("baselines: {handcrafted: {gamma: .inf}}", "baselines.handcrafted.gamma"),
        ("manifold: {perplexity: .nan}", "manifold.perplexity"),
        ("tracking: {connect_timeout_s: .inf}", "tracking.connect_timeout_s"),
        ("data: {csv: {rating_range: [0, .inf]}}", "data.csv.rating_range.1"),
        ("sweep: {space: {lr: {low: 0.001, high: .inf}}}", "sweep.space.lr.high"),
        ("explain: {noise_stdev: -.inf}", "explain.noise_stdev"),
    ],
)
def test_non_finite_numbers_are_refused_naming_the_key(tmp_path: Path, yaml_text: str, key: str) -> None:
    path = tmp_path / "params.yaml"
    path.write_text(yaml_text + "\n")
    with pytest.raises(ConfigError) as caught:
        load_params(path)
    assert f"{path}: {key}: " in str(caught.value)
    assert "finite number" in str(caught.value) or "greater than" in str(caught.value)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"baselines": {"handcrafted": {"c_grid": [1.0, -1.0]}}}, "baselines.handcrafted.c_grid.1: Input should be greater than 0"),
        ({"baselines": {"handcrafted": {"gamma": 0.0}}}, "baselines.handcrafted.gamma"),
        ({"sweep": {"space": {"lr": {"low": -0.1, "high": 0.1}}}}, "sweep.space.lr: -0.1 is not a valid train.lr"),
        ({"sweep": {"space": {"dropout": {"low": 0.1, "high": 1.0}}}}, "sweep.space.dropout: 1.0 is not a valid model.dropout"),
        ({"sweep": {"space": {"trainable_blocks": {"low": 0, "high": 9}}}}, "sweep.space.trainable_blocks: 9 is not a valid"),
        ({"sweep": {"space": {"augment_strength": {"low": -1.0, "high": 1.0}}}}, "sweep.space.augment_strength: -1.0"),
    ],
)
def test_grids_and_ranges_are_checked_where_their_values_land(raw: dict, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_params(raw, source="params.yaml")
    assert f"params.yaml: {message}" in str(caught.value)


# --- 9. formula injection in CSV outputs ---------------------------------------------------------------------------------


def test_text_cells_that_start_a_formula_are_neutralised_and_numbers_are_not() -> None:
    table = pd.DataFrame(
        {
            "id": ["=HYPERLINK(\"http://x\")", "+1", "-cmd", "@SUM(A1)", "\tx", "plain", "-5"],
            "rating": [-5.0, 1.0, -0.5, 2.0, 3.0, 4.0, 5.0],
            "split": pd.Categorical(["=a", "b", "c", "d", "e", "f", "g"]),
        }
    ).set_index(pd.Index(["=i", "j", "k", "l", "m", "n", "o"]))
    safe = spreadsheet_safe(table)
    assert safe["id"].tolist() == ["'=HYPERLINK(\"http://x\")", "'+1", "'-cmd", "'@SUM(A1)", "'\tx", "plain", "'-5"]
    assert safe["rating"].tolist() == [-5.0, 1.0, -0.5, 2.0, 3.0, 4.0, 5.0]
    assert safe["split"].tolist()[0] == "'=a" and safe.index[0] == "'=i"
    assert table["id"].iloc[0].startswith("=")  # the input is not changed


def test_a_predictions_csv_written_through_write_csv_has_no_formula_cells(tmp_path: Path) -> None:
    write_csv(pd.DataFrame({"id": ["=1+1", "ok"], "happy": [-1.5, 2.0]}), tmp_path / "p.csv", index=False)
    assert (tmp_path / "p.csv").read_text() == "id,happy\n'=1+1,-1.5\nok,2.0\n"


def test_every_csv_output_goes_through_the_one_writer() -> None:
    """prepare's own folder is the exception: it is read back by the project and keeps exact ids."""
    allowed = {REPO / "src/facetraits/spreadsheet.py", REPO / "src/facetraits/data/prepare.py"}
    writers = [
        f"{path.relative_to(REPO)}:{number}"
        for path in sorted([*(REPO / "src").rglob("*.py"), *(REPO / "pipelines").rglob("*.py")])
        if path not in allowed
        for number, line in enumerate(path.read_text().splitlines(), start=1)
        if ".to_csv(" in line or "csv.writer(" in line
    ]
    assert writers == []


# --- unclear errors made clear: tiny splits, a lone last face -------------------------------------------------------------


TINY_TRAIN = {
    "model": {"backbone": "resnet18", "head_hidden": 4, "trainable_blocks": 5},
    "train": {"max_epochs": 1, "batch_size": 4, "progress_bar": False, "accelerator": "cpu", "resume": False},
}


def _prepared(tmp_path: Path, n_faces: int, split: dict[str, float]):
    params = study_params(
        data={"image_size": 32, "attributes": ["happy"], "synthetic": {"n_faces": n_faces}, "split": split}, **TINY_TRAIN
    )
    prepare_dataset(params.data, tmp_path / "prepared", progress=False)
    return params, load_prepared(tmp_path / "prepared")


def test_a_split_too_small_to_train_is_refused_naming_the_split_and_counts(tmp_path: Path) -> None:
    params, data = _prepared(tmp_path, 8, {"train": 0.75, "val": 0.125, "test": 0.125})
    counts = {s: len(data.indices(s)) for s in ("train", "val", "test")}
    small = [s for s, n in counts.items() if n < 2]
    assert small, counts
    with pytest.raises(DataError) as caught:
        fit_attributes(data, data.attributes, params.model, params.train, tmp_path / "models")
    message = str(caught.value)
    assert message.startswith(f"{data.root}: the {' and '.join(small)} split(s) have fewer than 2 faces")
    assert ", ".join(f"{s} {n}" for s, n in counts.items()) in message
    assert not (tmp_path / "models" / "best.ckpt").exists()


def test_a_lone_last_training_face_is_dropped_so_batch_norm_trains(tmp_path: Path) -> None:
    params, data = _prepared(tmp_path, 16, {"train": 0.64, "val": 0.16, "test": 0.20})
    n_train = len(data.indices("train"))
    batch_size = n_train - 1  # the last batch holds exactly one face
    assert lone_last_face(n_train, batch_size) and not lone_last_face(n_train, n_train) and not lone_last_face(1, 4)
    module = FaceDataModule(str(data.root), data.attributes, batch_size, {"hflip": 0, "rotation_deg": 0, "strength": 0})
    module.setup()
    assert module.train_dataloader().drop_last and not module.val_dataloader().drop_last
    train = parse_params({**TINY_TRAIN, "train": {**TINY_TRAIN["train"], "batch_size": batch_size}}).train
    fit = fit_attributes(data, data.attributes, params.model, train, tmp_path / "models")
    assert fit.best_checkpoint.is_file() and np.isfinite(fit.history["train/loss"]).all()


def test_a_gzip_ratings_file_that_is_not_gzip_names_the_file(tmp_path: Path) -> None:
    make_omi(tmp_path, n_faces=6)
    raw = tmp_path / "attribute_ratings.csv.gz"
    raw.write_bytes(gzip.compress(b"rating,attribute,rating_type,stimulus\n")[:12])
    with pytest.raises(DataError, match=re.escape(f"{raw}: cannot read raw ratings")):
        read_source(study_params(data={"source": "omi", "path": str(tmp_path)}).data)


def test_a_tiff_declaring_huge_dimensions_is_refused_from_its_header(tmp_path: Path) -> None:
    path = tmp_path / "bomb.tif"
    Image.new("L", (4000, 4000)).save(path, compression="tiff_deflate")
    assert path.stat().st_size < 200_000
    with pytest.raises(DataError, match=re.escape(f"{path}: image is 4000x4000 = 16000000 pixels, over data.max_image_pixels")):
        load_face(path, 16, "pad", 1_000_000)


def test_a_yaml_alias_bomb_is_refused_without_expanding_it(tmp_path: Path) -> None:
    lines = ["variants:", "  a:", "    train:", '      k0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"      k{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, 10)]  # 9**10 strings if expanded
    lines += ["data:", "  attributes: *l9"]
    path = tmp_path / "params.yaml"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ConfigError) as caught:
        load_params(path)
    assert f"{path}: data.attributes.0: Input should be a valid string" in str(caught.value)
    assert len(str(caught.value)) < 5_000  # nine problems named, not 9**10 strings
    path.write_text("\n".join(lines[:-2]) + "\n")
    with pytest.raises(ConfigError, match=re.escape(f"{path}: variants.a: train.k9: unknown key")):
        load_params(path)


def test_a_face_id_that_reads_like_na_stays_an_id_in_the_prepared_data(tmp_path: Path) -> None:
    make_csv(tmp_path / "csv", n_faces=8, with_ratings=False)
    table = pd.read_csv(tmp_path / "csv" / "faces.csv", dtype=str, keep_default_na=False)
    table["id"] = ["NA", "null", "None", "nan", "face-5", "face-6", "face-7", "face-8"]
    table.to_csv(tmp_path / "csv" / "faces.csv", index=False)
    params = study_params(data={"source": "csv", "path": str(tmp_path / "csv"), "image_size": 16, "csv": {"id_column": "id"}})
    prepare_dataset(params.data, tmp_path / "prepared", progress=False)
    faces = load_prepared(tmp_path / "prepared").faces
    assert sorted(faces["id"]) == sorted(table["id"]) and sorted(faces["group"]) == sorted(table["id"])


def test_a_missing_model_path_is_named(face: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "models" / "best.ckpt"
    assert cli(["predict", str(face), "--model", str(missing)]) == 1
    assert capsys.readouterr().err == f"error: --model: {missing}: no such checkpoint file or MLflow model folder\n"


def _rename_header_cell(workbook: Path, sheet: str, old: str, new: str) -> None:
    from openpyxl import load_workbook

    book = load_workbook(workbook)
    cell = next(c for row in book[sheet].iter_rows(max_row=20) for c in row if c.value == old)
    cell.value = new
    book.save(workbook)


def test_repeated_attribute_column_in_workbooks_is_refused_naming_file_sheet_and_column(tmp_path: Path) -> None:
    from tests.fixtures.layouts import CFD_SHEET, CFD_WORKBOOK, US10K_TABLE_DIR, make_cfd

    us10k = make_us10k(tmp_path / "us10k", n_faces=6, with_raw=False)
    workbook = us10k.root / US10K_TABLE_DIR / "psychology-attributes.xlsx"
    _rename_header_cell(workbook, "Final Values", "friendly", "happy")
    with pytest.raises(DataError, match=re.escape(f"{workbook} sheet 'Final Values': column(s) ['happy'] appear more")):
        read_source(study_params(data={"source": "us10k", "path": str(us10k.root)}).data)
    cfd = make_cfd(tmp_path / "cfd", n_targets=4)
    _rename_header_cell(cfd.root / CFD_WORKBOOK, CFD_SHEET, "Dominant", "Happy")
    with pytest.raises(DataError, match=re.escape(f"sheet '{CFD_SHEET}': column(s) ['Happy'] appear more than once")):
        read_source(study_params(data={"source": "cfd", "path": str(cfd.root)}).data)


@pytest.mark.parametrize("kind", ["gz", "zip"])
def test_a_ratings_decompression_bomb_is_refused_before_it_fills_memory(tmp_path: Path, kind: str) -> None:
    import zipfile

    fixture = make_omi(tmp_path, n_faces=6, ratings=None)
    rows = b"rating,attribute,rating_type,stimulus\n" + f"50,happy,normal,{fixture.ids[0]}\n".encode() * 1_000_000
    if kind == "gz":
        bomb = tmp_path / "attribute_ratings.csv.gz"
        bomb.write_bytes(gzip.compress(rows, compresslevel=9))
    else:
        bomb = tmp_path / "attribute_ratings.zip"
        with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            archive.writestr("attribute_ratings.csv", rows)
    assert len(rows) > 200 * bomb.stat().st_size  # ~20 MB from well under 100 kB
    with pytest.raises(DataError, match=re.escape(f"{bomb}: decompresses to over 6,553,600 bytes, 100 times its")):
        read_source(study_params(data={"source": "omi", "path": str(tmp_path)}).data)


def test_the_real_omi_ratings_are_within_the_expansion_limit(omi_dev: Path) -> None:
    from facetraits.data.sources.base import MAX_EXPANSION

    raw = omi_dev / "attribute_ratings.csv.gz"
    with gzip.open(raw) as stream:
        expanded = sum(len(chunk) for chunk in iter(lambda: stream.read(1 << 20), b""))
    assert expanded < MAX_EXPANSION / 5 * raw.stat().st_size
