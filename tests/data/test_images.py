from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from facetraits.data.images import load_face
from facetraits.errors import DataError


def _save(path: Path, pixels: np.ndarray) -> Path:
    Image.fromarray(pixels).save(path)
    return path


def test_portrait_is_padded_with_the_border_colour(tmp_path: Path) -> None:
    pixels = np.full((40, 20, 3), 200, dtype=np.uint8)
    pixels[10:30, 5:15] = (255, 0, 0)
    face = load_face(_save(tmp_path / "p.png", pixels), size=40, square="pad", max_pixels=10**6)
    assert face.shape == (40, 40, 3) and face.dtype == np.uint8
    assert (face[:, :8] == 200).all() and (face[:, -8:] == 200).all()
    assert tuple(face[20, 20]) == (255, 0, 0)


def test_landscape_is_centre_cropped(tmp_path: Path) -> None:
    pixels = np.zeros((20, 60, 3), dtype=np.uint8)
    pixels[:, 20:40] = (0, 255, 0)
    face = load_face(_save(tmp_path / "l.png", pixels), size=20, square="crop", max_pixels=10**6)
    assert (face == (0, 255, 0)).all()


def test_greyscale_and_alpha_become_rgb(tmp_path: Path) -> None:
    Image.new("L", (30, 30), 77).save(tmp_path / "g.png")
    Image.new("RGBA", (30, 30), (1, 2, 3, 128)).save(tmp_path / "a.png")
    assert (load_face(tmp_path / "g.png", 16, "pad", 10**6) == 77).all()
    assert load_face(tmp_path / "a.png", 16, "pad", 10**6).shape == (16, 16, 3)


def test_large_jpeg_is_decoded_at_reduced_scale_without_loss_of_shape(tmp_path: Path) -> None:
    pixels = np.random.default_rng(0).integers(0, 255, (1200, 1600, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "big.jpg", quality=80)
    assert load_face(tmp_path / "big.jpg", 64, "crop", 10**7).shape == (64, 64, 3)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda p: p.write_bytes(b"not an image at all"), "cannot decode image"),
        (lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 3]), "cannot decode image"),
        (lambda p: p.unlink(), "image file not found"),
    ],
    ids=["corrupt", "truncated", "missing"],
)
def test_bad_files_name_the_file(tmp_path: Path, damage, message: str) -> None:
    path = tmp_path / "face.jpg"
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(path)
    damage(path)
    with pytest.raises(DataError, match=message) as caught:
        load_face(path, 32, "pad", 10**6)
    assert str(path) in str(caught.value)


def test_pixel_limit_refuses_image_bombs_before_decoding(tmp_path: Path) -> None:
    path = tmp_path / "bomb.png"
    Image.new("RGB", (5000, 5000), (0, 0, 0)).save(path, optimize=True)
    assert path.stat().st_size < 200_000
    with pytest.raises(DataError, match=r"5000x5000 = 25000000 pixels, over data.max_image_pixels = 1000000"):
        load_face(path, 32, "pad", max_pixels=1_000_000)


def test_a_thin_image_is_refused_by_the_canvas_padding_would_allocate(tmp_path: Path) -> None:
    """1x60000 is 60,000 pixels and a 312-byte PNG, but padded square it is a 10.8 GB canvas: refused from the
    header, before decoding; cropped, it is one pixel and is read."""
    path = tmp_path / "thin.png"
    Image.new("RGB", (1, 60000)).save(path)
    assert path.stat().st_size < 1_000
    with pytest.raises(DataError, match=rf"{path}: image is 1x60000; padded square it is 60000x60000 = 3600000000 "
                       r"pixels, over data.max_image_pixels = 40000000"):  # fmt: skip
        load_face(path, 32, "pad", max_pixels=40_000_000)
    assert load_face(path, 8, "crop", max_pixels=40_000_000).shape == (8, 8, 3)
