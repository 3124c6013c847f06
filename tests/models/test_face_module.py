import dataclasses

import lightning as L
import numpy as np
import pytest
import torch

from facetraits.errors import ConfigError
from facetraits.models.face_module import load_module
from facetraits.models.inference import predict_images
from facetraits.models.training import Runtime, build_datamodule, fit_attributes
from tests.models.conftest import tiny_params


def _module(tiny_data, optim: dict | None = None, **model):
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
            **(optim or {}),
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


def test_hflip_average_is_the_mean_of_both_views_in_eval_and_one_view_in_training(tiny_data) -> None:
    module = _module(tiny_data, backbone="resnet18", hflip_average=True)
    images = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        module.eval()
        single = module.net.backbone((images - module.net.pixel_mean) / module.net.pixel_std)
        mirrored = module.net.backbone((images.flip(-1) - module.net.pixel_mean) / module.net.pixel_std)
        torch.testing.assert_close(module.net.features(images), (single + mirrored) / 2)
        torch.testing.assert_close(module.net.features(images.flip(-1)), module.net.features(images))
        module.net.training = True  # only the flag that picks the views: batch norm stays in eval, like `single`
        torch.testing.assert_close(module.net.features(images), single)


def test_onecycle_warms_every_group_up_to_its_own_lr_then_anneals(tiny_data) -> None:
    params = tiny_params(train={"scheduler": "onecycle", "warmup_share": 0.25, "max_epochs": 2})
    module = _module(tiny_data, optim={"scheduler": "onecycle", "warmup_share": 0.25, "max_epochs": 2})
    datamodule = build_datamodule(tiny_data, tiny_data.attributes, params.train, Runtime.resolve(params.train))
    seen: list[list[float]] = []

    class Record(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            seen.append([group["lr"] for group in trainer.optimizers[0].param_groups])

    trainer = L.Trainer(max_epochs=2, accelerator="cpu", logger=False, enable_progress_bar=False,
                        enable_checkpointing=False, callbacks=[Record()], limit_val_batches=0)  # fmt: skip
    trainer.fit(module, datamodule=datamodule)
    lrs = np.array(seen)  # (steps, groups): heads 1e-3, backbone 1e-4 at the peak
    peak = int(np.argmax(lrs[:, 0]))
    assert 0 < peak < len(lrs) - 1 and np.all(np.diff(lrs[: peak + 1, 0]) > 0) and np.all(np.diff(lrs[peak:, 0]) < 0)
    np.testing.assert_allclose(lrs.max(axis=0), [1e-3, 1e-4], rtol=0.05)
    np.testing.assert_allclose(lrs[:, 1] / lrs[:, 0], 0.1, rtol=1e-6)
