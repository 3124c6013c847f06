"""Decode one face image into a square uint8 array of the study's size."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from facetraits.errors import DataError


def _square(image: Image.Image, square: Literal["crop", "pad"]) -> Image.Image:
    """Centre-crop to the short side, or pad to the long side with the border's median colour."""
    width, height = image.size
    side = min(width, height) if square == "crop" else max(width, height)
    if width == height:
        return image
    if square == "crop":
        left, top = (width - side) // 2, (height - side) // 2
        return image.crop((left, top, left + side, top + side))
    pixels = np.asarray(image)
    border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
    canvas = Image.new("RGB", (side, side), tuple(int(c) for c in np.median(border, axis=0).round()))
    canvas.paste(image, ((side - width) // 2, (side - height) // 2))
    return canvas


_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")


def _eight_bit(image: Image.Image, path: Path) -> Image.Image:
    """Pillow clips 16/32-bit grey to 255 (pure white) when converting to RGB: scale by the true range instead."""
    if image.mode not in (*_SIXTEEN_BIT_MODES, "I", "F"):
        return image
    values = np.asarray(image)
    if image.mode == "F":
        if not np.isfinite(values).all() or values.min() < 0 or values.max() > 1:
            raise DataError(
                f"{path}: floating-point image with values in [{np.nanmin(values):g}, {np.nanmax(values):g}]; "
                "only [0, 1] is understood (save it as 8- or 16-bit)"
            )
        scaled = values * 255.0
    else:
        bits = 16 if image.mode in _SIXTEEN_BIT_MODES else int((getattr(image, "tag_v2", {}) or {}).get(258, (32,))[0])
        if values.min() < 0:
            raise DataError(f"{path}: {bits}-bit image with negative values (min {values.min()}); save it unsigned")
        scaled = values.astype(np.float64) * (255.0 / (2**bits - 1))
    return Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8), mode="L")


def _check_size(path: Path, size: tuple[int, int], square: Literal["crop", "pad"], max_pixels: int) -> None:
    """Memory is bounded by the header's size, read before anything is decoded: the image itself and, padded,
    the square canvas it is pasted on (a 1x60000 image is 60,000 pixels but a 3.6-gigapixel canvas)."""
    width, height = size
    side = max(width, height)
    if width * height > max_pixels:
        raise DataError(
            f"{path}: image is {width}x{height} = {width * height} pixels, over data.max_image_pixels = {max_pixels}"
        )
    if square == "pad" and side * side > max_pixels:
        raise DataError(
            f"{path}: image is {width}x{height}; padded square it is {side}x{side} = {side * side} pixels, "
            f"over data.max_image_pixels = {max_pixels}"
        )


def load_face(path: Path, size: int, square: Literal["crop", "pad"], max_pixels: int) -> np.ndarray:
    """(size, size, 3) uint8; every failure is a DataError naming the file."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as opened:
                _check_size(path, opened.size, square, max_pixels)
                opened.draft("RGB", (size, size))
                image = _eight_bit(ImageOps.exif_transpose(opened), path).convert("RGB")
    except FileNotFoundError:
        raise DataError(f"{path}: image file not found") from None
    except MemoryError:
        raise DataError(f"{path}: out of memory while decoding it (lower data.max_image_pixels)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise DataError(f"{path}: refused as a decompression bomb: {exc}") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"{path}: cannot decode image: {exc}") from None
    face = _square(image, square).resize((size, size), Image.Resampling.LANCZOS)
    return np.asarray(face, dtype=np.uint8)
