import dataclasses

import lightning as L
import numpy as np
import pytest
import torch

from facetraits.errors import ConfigError
from facetraits.models.face_module import load_module
from facetraits.models.training import Runtime, build_datamodule, fit_attributes, predict_images
from tests.models.conftest import tiny_params


def _module(tiny_data, **model):
    from facetraits.models.face_module import FaceTraitsModule

    params = tiny_params(model=model)
    return FaceTraitsModule(
        attributes=list(tiny_data.attributes),
        target_mean=[5.0] * len(tiny_data.attributes),
        target_std=[2.0] * len(tiny_data.attributes),
        image_size=32,
        model=dataclasses.asdict(params.model),
        optim={
            "loss": "mse", "huber_delta": 1.0, "pearson_weight": 0.5, "optimizer": "adamw", "lr": 1e-3,
            "backbone_lr_scale": 0.1, "weight_decay": 0.0, "momentum": 0.9, "scheduler": "cosine", "max_epochs": 1,
        },
    )  # fmt: skip


@pytest.mark.parametrize("head", ["linear", "mlp"])
def test_fast_dev_run_every_step(tiny_data, head: str) -> None:
    params = tiny_params()
    module = _module(tiny_data, head=head)
    datamodule = build_datamodule(tiny_data, tiny_data.attributes, params.train, Runtime.resolve(params.train))
    trainer = L.Trainer(fast_dev_run=True, accelerator="cpu", logger=False, enable_progress_bar=False)
    trainer.fit(module, datamodule=datamodule)
    assert np.isfinite(float(trainer.callback_metrics["train/loss"]))
    assert "val/pearson/happy" in trainer.callback_metrics
    trainer.test(module, datamodule=datamodule, verbose=False)
    assert -1 <= float(trainer.callback_metrics["test/pearson_mean"]) <= 1


def test_outputs_are_in_rating_units(tiny_data) -> None:
    module = _module(tiny_data).eval()
    with torch.no_grad():
        images = torch.rand(4, 3, 32, 32)
        torch.testing.assert_close(module(images), module.net.standardized(images) * 2.0 + 5.0)


def test_checkpoint_round_trip_without_pickled_code(tiny_data, tmp_path) -> None:
    fit = fit_attributes(tiny_data, tiny_data.attributes, tiny_params().model, tiny_params().train, tmp_path / "m")
    loaded = load_module(fit.best_checkpoint)
    assert loaded.attributes == list(tiny_data.attributes)
    stats = tiny_data.faces.loc[tiny_data.indices("train"), list(tiny_data.attributes)]
    np.testing.assert_allclose(loaded.net.target_mean.numpy(), stats.mean().to_numpy(), rtol=1e-5)
    predicted = predict_images(loaded.net, tiny_data.images[:5])
    with torch.no_grad():
        direct = loaded(torch.from_numpy(np.asarray(tiny_data.images[:5])).permute(0, 3, 1, 2).float() / 255)
    np.testing.assert_allclose(predicted, direct.numpy(), rtol=1e-5)


def test_checkpoint_from_another_model_is_refused(tmp_path) -> None:
    path = tmp_path / "other.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"lr": 0.1}}, path)
    with pytest.raises(ConfigError, match="not a facetraits checkpoint"):
        load_module(path)
    torch.save({"model": torch.nn.Linear(2, 2)}, tmp_path / "pickled.ckpt")
    with pytest.raises(ConfigError, match="not a loadable facetraits checkpoint"):
        load_module(tmp_path / "pickled.ckpt")
