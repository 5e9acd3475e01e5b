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


class CorruptImageError(ValueError):
    """An unreadable image with ``data.on_corrupt=error``, an evaluation image that broke after its check, or
    no decodable image at all: a data error the run stops on, naming the file."""


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


# a float image whose largest value is at most this is on the [0, 1] scale (a little overshoot from resampling
# or HDR export is clipped to white); from FLOAT_255_MIN on it is on the [0, 255] scale; between, it is refused
FLOAT_UNIT_MAX = 1.1
FLOAT_255_MIN = 16.0
# alpha is composited over white, as image viewers and browsers show a transparent background
BACKGROUND = (255, 255, 255, 255)


def to_rgb8(image: Image.Image) -> Image.Image:
    """8-bit RGB with the image's intended brightness: 16-bit integers are divided by 257, float images on
    the [0, 1] scale (up to `FLOAT_UNIT_MAX`) multiplied by 255, floats on the [0, 255] scale kept; alpha
    (RGBA, LA, a palette or grey/RGB image with a transparent colour) is composited over white; palette,
    CMYK, YCbCr and 1-bit images are converted by PIL. Values with no clear meaning (negative, past 255,
    a float range that is neither scale, NaN) and modes PIL cannot convert are `UnreadableImage`, naming the
    mode and range: never clipped or read as black."""
    mode = image.mode
    if mode in _INTEGER_RANGE or mode == "F":
        return _scaled_gray(image)
    try:
        if mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info:
            rgba = image.convert("RGBA")
            return Image.alpha_composite(Image.new("RGBA", rgba.size, BACKGROUND), rgba).convert("RGB")
        return image.convert("RGB")
    except (ValueError, OSError) as err:  # e.g. LAB or HSV, which PIL cannot convert to RGB
        raise UnreadableImage(f"pixel mode {mode} cannot be read as RGB ({err})") from err


def _scaled_gray(image: Image.Image) -> Image.Image:
    pixels = np.asarray(image, dtype=np.float64)
    low, high = (float(pixels.min()), float(pixels.max())) if pixels.size else (0.0, 0.0)
    if image.mode == "F":
        if not np.isfinite(pixels).all():
            raise UnreadableImage("float pixels hold NaN or infinity")
        if low < 0 or high > 255 or FLOAT_UNIT_MAX < high < FLOAT_255_MIN:
            raise UnreadableImage(
                f"float pixels in [{low:g}, {high:g}]: neither the [0, 1] nor the [0, 255] scale; rescale the file"
            )
        scale = 255.0 if high <= FLOAT_UNIT_MAX else 1.0
    else:
        if low < 0 or high > _INTEGER_RANGE[image.mode]:
            raise UnreadableImage(f"integer pixels in [{low:g}, {high:g}]; expected 16-bit values")
        scale = 255.0 / _INTEGER_RANGE[image.mode]
    gray = np.clip(np.rint(pixels * scale), 0, 255).astype(np.uint8)
    return Image.fromarray(gray).convert("RGB")
