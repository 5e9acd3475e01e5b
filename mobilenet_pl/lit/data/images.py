"""Reading image files for the image-folder data sets.

PIL's ``convert("RGB")`` clips 16-bit images to white and truncates float images in [0, 1] to black, and
a 15000x15000 PNG of 54 KB (a decompression bomb) raises an error that is not an ``OSError``. Here every
pixel format PIL opens is scaled to 8-bit RGB, and every way a file can fail to load is one exception,
``UnreadableImage``, so the data sets can skip such files or stop naming them.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

# timm's constants, shared by the workers path (transforms.py) and the device path (device_decode.py)
IMAGENET_MEAN, IMAGENET_STD = IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
IGNORE_INDEX = -100  # label of padding samples; F.cross_entropy's default ignore_index

# the largest value of an integer image's full range, by PIL mode; 8-bit modes need no scaling
_INTEGER_RANGE = {"I;16": 65535, "I;16B": 65535, "I;16L": 65535, "I;16N": 65535, "I": 65535}


class UnreadableImage(Exception):
    """An image file that cannot be decoded (corrupt, truncated, not an image, too large, odd pixel values)."""


def display_name(name: str) -> str:
    """A file or folder name safe for printing, JSON and plots: undecodable bytes become ``\\xNN``."""
    return os.fsencode(name).decode("utf-8", "backslashreplace")


def load_rgb(path: str | Path, max_side: int | None = None) -> Image.Image:
    """Decode ``path`` as an 8-bit RGB image; ``max_side`` lets JPEGs decode at a reduced size (a quick check).

    Raises:
        UnreadableImage: the file is not a decodable image, exceeds PIL's ``Image.MAX_IMAGE_PIXELS`` (a
            decompression bomb), or holds values that have no 8-bit meaning (e.g. float pixels above 255).
    """
    try:
        with warnings.catch_warnings():
            # PIL warns between 1x and 2x its pixel limit (raises above); the size check below refuses both.
            # (catch_warnings is not thread-safe: at worst this "ignore" outlives the call, which is harmless.)
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with open(path, "rb") as handle:
                image = Image.open(handle)
                if Image.MAX_IMAGE_PIXELS and image.width * image.height > Image.MAX_IMAGE_PIXELS:
                    raise Image.DecompressionBombError(f"{image.width}x{image.height} pixels")
                if max_side is not None:
                    image.draft("RGB", (max_side, max_side))
                image.load()
    except Image.DecompressionBombError as err:
        raise UnreadableImage(
            f"larger than PIL's limit of {Image.MAX_IMAGE_PIXELS} pixels, a decompression bomb? ({err})"
        ) from err
    except (OSError, ValueError, SyntaxError, EOFError, MemoryError) as err:  # unidentified, truncated, broken
        raise UnreadableImage(f"{err.__class__.__name__}: {err}") from err
    return to_rgb8(image)


def to_rgb8(image: Image.Image) -> Image.Image:
    """8-bit RGB with the image's full range kept: 16-bit integers are divided by 257, floats in [0, 1]
    multiplied by 255 (floats in [0, 255] kept); anything else is refused rather than clipped."""
    if image.mode not in _INTEGER_RANGE and image.mode != "F":
        return image.convert("RGB")
    pixels = np.asarray(image, dtype=np.float64)
    if image.mode == "F":
        if not np.isfinite(pixels).all() or pixels.min() < 0 or pixels.max() > 255:
            raise UnreadableImage(f"float pixels in [{pixels.min():g}, {pixels.max():g}]; expected [0, 1] or [0, 255]")
        scale = 255.0 if pixels.max() <= 1.0 else 1.0
    else:
        if pixels.min() < 0 or pixels.max() > _INTEGER_RANGE[image.mode]:
            raise UnreadableImage(f"integer pixels in [{pixels.min():g}, {pixels.max():g}]; expected 16-bit values")
        scale = 255.0 / _INTEGER_RANGE[image.mode]
    gray = np.clip(np.rint(pixels * scale), 0, 255).astype(np.uint8)
    return Image.fromarray(gray).convert("RGB")
