import json
import logging.handlers
import warnings
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities.rank_zero import rank_zero_info, rank_zero_module

from facetraits.config import TrainParams, merge_overrides
from facetraits.data.prepared import PreparedData
from facetraits.models.face_module import load_module
from facetraits.models.training import (
    STATE_FILE, FolderCheckpoint, Runtime, build_datamodule, build_trainer, fit_attributes, quiet_lightning, train_study,
)  # fmt: skip
from tests.models.conftest import folder_bytes, tiny_params


class _Interrupt(Exception):
    pass


class _KillAtEpoch(L.Callback):
    """Stands in for a SIGKILL: stop the run once `epoch` starts (the previous epoch is checkpointed)."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.current_epoch == self.epoch:
            raise _Interrupt


def test_training_loss_decreases(tiny_data, tmp_path) -> None:
    params = tiny_params(
        model={"backbone": "vgg16_bn", "trainable_blocks": 5}, train={"max_epochs": 5, "backbone_lr_scale": 1.0, "patience": 10}
    )
    fit = fit_attributes(tiny_data, tiny_data.attributes, params.model, params.train, tmp_path)
    losses = fit.history["train/loss"].to_numpy()
    assert len(losses) == 5
    assert losses[-1] < losses[0] * 0.9


def test_resume_from_last_checkpoint_continues_the_epoch_count(tiny_data, tmp_path) -> None:
    params = tiny_params(train={"max_epochs": 3, "patience": 10})
    with pytest.raises(_Interrupt):
        fit_attributes(tiny_data, tiny_data.attributes, params.model, params.train, tmp_path, extra_callbacks=[_KillAtEpoch(2)])
    assert (tmp_path / "last.ckpt").is_file()
    assert json.loads((tmp_path / STATE_FILE).read_text())["complete"] is False
    resumed = fit_attributes(tiny_data, tiny_data.attributes, params.model, params.train, tmp_path)
    assert resumed.resumed_from_epoch == 1
    assert list(resumed.history["epoch"]) == [0, 1, 2]
    assert json.loads((tmp_path / STATE_FILE).read_text())["complete"] is True


def test_a_finished_or_different_run_is_not_resumed(tiny_data, tmp_path) -> None:
    params = tiny_params(train={"max_epochs": 2})
    fit_attributes(tiny_data, tiny_data.attributes, params.model, params.train, tmp_path)
    again = fit_attributes(tiny_data, tiny_data.attributes, params.model, params.train, tmp_path)
    assert again.resumed_from_epoch is None and len(again.history) == 2
    with pytest.raises(_Interrupt):
        fit_attributes(tiny_data, tiny_data.attributes, params.model, params.train, tmp_path, extra_callbacks=[_KillAtEpoch(1)])
    other = tiny_params(train={"max_epochs": 2, "lr": 0.01})
    assert fit_attributes(tiny_data, tiny_data.attributes, other.model, other.train, tmp_path).resumed_from_epoch is None


def test_fit_on_train_and_val_learns_from_both_runs_the_whole_schedule_and_keeps_the_last_epoch(tiny_data, tmp_path) -> None:
    params = tiny_params(train={"max_epochs": 3, "patience": 1, "fit_on": "train+val"})
    datamodule = build_datamodule(tiny_data, tiny_data.attributes, params.train, Runtime.resolve(params.train))
    datamodule.setup("fit")
    both = np.sort(np.concatenate([tiny_data.indices("train"), tiny_data.indices("val")]))
    np.testing.assert_array_equal(datamodule.datasets["train"].indices, both)
    fit = fit_attributes(tiny_data, tiny_data.attributes, params.model, params.train, tmp_path)
    assert list(fit.history["epoch"]) == [0, 1, 2]  # patience 1 stops nothing: there is no val score
    assert not any(column.startswith("val/") for column in fit.history.columns)
    best = torch.load(fit.best_checkpoint, map_location="cpu", weights_only=True)
    last = torch.load(tmp_path / "last.ckpt", map_location="cpu", weights_only=True)
    assert best["epoch"] == last["epoch"] == 2
    for key, value in last["state_dict"].items():
        torch.testing.assert_close(best["state_dict"][key], value)
    targets = tiny_data.faces[list(tiny_data.attributes)].to_numpy(np.float64)
    np.testing.assert_allclose(load_module(fit.best_checkpoint).net.target_mean.numpy(), targets[both].mean(axis=0), rtol=1e-5)
    assert "test/pearson_mean" in fit.test


def test_per_attribute_protocol_trains_one_model_each(tiny_data, tmp_path) -> None:
    params = tiny_params(train={"protocol": "per_attribute"})
    subset = type(tiny_data)(tiny_data.root, tiny_data.images, tiny_data.faces, {**tiny_data.meta, "attributes": ["happy", "dominant"]})
    fits = train_study(subset, params.model, params.train, tmp_path)
    assert [fit.attributes for fit in fits] == [("happy",), ("dominant",)]
    assert (tmp_path / "happy" / "best.ckpt").is_file() and (tmp_path / "dominant" / "best.ckpt").is_file()
    assert set(fits[0].test) >= {"test/pearson/happy", "test/mae/happy"}
    assert not any("dominant" in key for key in fits[0].test)


@pytest.mark.parametrize("protocol", ["shared", "per_attribute"])
def test_the_same_training_in_two_folders_writes_the_same_bytes(tiny_data, tmp_path, protocol) -> None:
    params = tiny_params(train={"protocol": protocol, "precision": "32-true", "attribute_workers": 1})
    subset = type(tiny_data)(tiny_data.root, tiny_data.images, tiny_data.faces, {**tiny_data.meta, "attributes": ["happy", "dominant"]})
    first, second = tmp_path / "a" / "models", tmp_path / "elsewhere" / "models"
    for folder in (first, second):
        train_study(subset, params.model, params.train, folder)
    written = folder_bytes(first)
    assert any(name.endswith("last.ckpt") for name in written) and any(name.endswith("best.ckpt") for name in written)
    assert written.keys() == folder_bytes(second).keys()
    for name, content in folder_bytes(second).items():
        assert content == written[name], name


def test_checkpoint_state_names_files_within_its_folder_and_resumes_in_another(tmp_path) -> None:
    saved = FolderCheckpoint(dirpath=tmp_path / "a", filename="best", monitor="val/pearson_mean", mode="max")
    saved.best_model_path = saved.kth_best_model_path = str(tmp_path / "a" / "best.ckpt")
    saved.best_model_score = saved.kth_value = torch.tensor(0.5)
    saved.best_k_models = {saved.best_model_path: torch.tensor(0.5)}
    state = saved.state_dict()
    assert state["dirpath"] == "." and state["best_model_path"] == "best.ckpt" and set(state["best_k_models"]) == {"best.ckpt"}
    assert state["last_model_path"] == ""
    assert saved.state_key == ModelCheckpoint(monitor="val/pearson_mean", mode="max").state_key  # older checkpoints resume
    moved = FolderCheckpoint(dirpath=tmp_path / "b", filename="best", monitor="val/pearson_mean", mode="max")
    moved.load_state_dict(state)
    assert moved.best_model_path == str(tmp_path / "b" / "best.ckpt") and float(moved.best_model_score) == 0.5
    assert set(moved.best_k_models) == {str(tmp_path / "b" / "best.ckpt")}


def test_a_quiet_fit_drops_lightning_tips_and_expected_warnings_and_shows_the_rest() -> None:
    lines = logging.handlers.BufferingHandler(capacity=100)
    rank_zero_module.log.addHandler(lines)
    try:
        with warnings.catch_warnings(record=True) as shown:
            warnings.simplefilter("always")
            with quiet_lightning():
                warnings.warn("Checkpoint directory /x/models exists and is not empty.", UserWarning)
                warnings.warn("Found 38 module(s) in eval mode at the start of training. This may", UserWarning)
                warnings.warn("`isinstance(treespec, LeafSpec)` is deprecated, use `isinstance(...)`", FutureWarning)
                warnings.warn("a metric is NaN", UserWarning)
                rank_zero_info("💡 Tip: For seamless cloud logging, try installing litlogger")
                rank_zero_info("GPU available: False, used: False")
            warnings.warn("Checkpoint directory /x/models exists and is not empty.", UserWarning)  # outside: shown
            rank_zero_info("💡 Tip: outside a fit")
    finally:
        rank_zero_module.log.removeHandler(lines)
    assert [str(w.message) for w in shown] == ["a metric is NaN", "Checkpoint directory /x/models exists and is not empty."]
    assert [record.getMessage() for record in lines.buffer] == ["GPU available: False, used: False", "💡 Tip: outside a fit"]


def _test_metrics(data: PreparedData, checkpoint: Path, train: TrainParams) -> dict[str, float]:
    """Test-split metrics of a saved model on the devices/strategy `train` asks for (DDP included)."""
    module = load_module(checkpoint)
    runtime = Runtime.resolve(train)
    trainer = build_trainer(train, runtime, [], False, checkpoint.parent)
    results = trainer.test(module, datamodule=build_datamodule(data, module.attributes, train, runtime), verbose=False)
    return {k: float(v) for k, v in results[0].items()}


@pytest.mark.slow
def test_two_process_ddp_gives_the_single_process_test_metrics(tiny_data, tmp_path) -> None:
    params = tiny_params()
    fit = fit_attributes(tiny_data, tiny_data.attributes, params.model, params.train, tmp_path)
    assert len(tiny_data.indices("test")) % 2 == 1, "an odd test split makes the DDP sampler pad with a repeat"
    single = _test_metrics(tiny_data, fit.best_checkpoint, params.train)
    ddp = _test_metrics(
        tiny_data, fit.best_checkpoint, tiny_params(train={"devices": 2, "strategy": "ddp_fork", "accelerator": "cpu"}).train
    )
    assert set(ddp) == set(single)
    for key, value in single.items():
        if "loss" in key:
            continue  # mean of per-process batch losses: weighting differs by design
        # float32 convolutions differ by batch size in the last digits (about 1e-5 in r on this CPU); one padded
        # duplicate among the ~20 test faces would move r by about 1e-2
        assert ddp[key] == pytest.approx(value, abs=1e-4), key
    assert np.isfinite(list(single.values())).all()


@pytest.mark.slow
def test_mouth_driven_happy_is_learned_by_the_default_study(tmp_path) -> None:
    """The default params (1,000 synthetic faces at 64 px, VGG16-BN from scratch, 5 epochs) learn `happy`.

    Measured: val r(happy) by epoch 0.08, 0.02, 0.34, 0.59, 0.71. At 32 px or with fewer faces the
    same network stays near chance within 4-5 epochs (0.1-0.3, unstable across seeds), so the check
    uses the default study itself. Under no learning, r over 160 val faces has sd ~0.08: 0.4 is 5 sd.
    Training stops at the first epoch past it (the 4th of 5 as measured): the rest would prove nothing more.
    """
    from lightning.pytorch.callbacks import Callback

    class StopOnceLearned(Callback):
        def on_validation_end(self, trainer, module) -> None:
            if float(trainer.callback_metrics["val/pearson/happy"]) > 0.4:
                trainer.should_stop = True

    from facetraits.data.prepare import prepare_dataset
    from facetraits.data.prepared import load_prepared
    from tests.conftest import REPO
    from facetraits.config import load_params

    params = load_params(REPO / "params.yaml")
    params = merge_overrides(params, {"train": {"progress_bar": False}})
    prepare_dataset(params.data, tmp_path / "prepared", progress=False)
    data = load_prepared(tmp_path / "prepared")
    fit = fit_attributes(
        data, data.attributes, params.model, params.train, tmp_path / "models", extra_callbacks=[StopOnceLearned()],
        run_test=False,
    )  # fmt: skip
    assert len(data.indices("val")) == 160
    assert fit.history["val/pearson/happy"].max() > 0.4


def test_a_holdout_fit_gives_out_of_sample_val_predictions_from_its_last_epoch(tiny_data, tmp_path) -> None:
    params = tiny_params(train={"max_epochs": 2, "patience": 1, "fit_on": "train+val", "holdout_fit": True, "precision": "32-true"})
    (fit,) = train_study(tiny_data, params.model, params.train, tmp_path)
    holdout = tmp_path / "holdout"
    state = torch.load(holdout / "last.ckpt", map_location="cpu", weights_only=True)
    assert state["epoch"] == 1  # the whole schedule (patience 1 stops nothing), as the train+val fit runs it
    net = load_module(holdout / "last.ckpt").net.eval()
    val = tiny_data.indices("val")
    # it learned from the train faces alone: its target statistics are theirs
    targets = tiny_data.faces[list(tiny_data.attributes)].to_numpy(np.float64)
    np.testing.assert_allclose(net.target_mean.numpy(), targets[tiny_data.indices("train")].mean(axis=0), rtol=1e-5)
    with torch.no_grad():
        expected = net(torch.from_numpy(np.asarray(tiny_data.images[val])).permute(0, 3, 1, 2).float() / 255).numpy()
    assert fit.holdout_val.shape == (len(val), len(tiny_data.attributes))
    np.testing.assert_allclose(fit.holdout_val, expected, rtol=1e-4, atol=1e-4)
    # and the study's model itself is the train+val fit, in its own folder
    assert fit.best_checkpoint == tmp_path / "best.ckpt"
    assert load_module(fit.best_checkpoint).net.target_mean.numpy() == pytest.approx(
        targets[np.concatenate([tiny_data.indices("train"), val])].mean(axis=0), rel=1e-5
    )
