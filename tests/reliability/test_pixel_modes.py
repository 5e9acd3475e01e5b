"""Pixels mean what they say: every image mode PIL opens reaches the network with its intended brightness
(read by the one reader both decode paths use, ``load_rgb``), or is refused by name (``UnreadableImage``,
which the data sets log with the file's name and count, or stop on with ``data.on_corrupt=error``)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from mobilenet_pl.lit.data.images import UnreadableImage, load_rgb, to_rgb8

GRAY = 0.6  # the intended brightness of every test image, as a fraction of white


def mean_brightness(path: Path) -> float:
    return float(np.asarray(load_rgb(path), dtype=np.float64).mean() / 255)


def save(tmp_path: Path, name: str, image: Image.Image) -> Path:
    path = tmp_path / name
    image.save(path)
    return path


def float_image(values: np.ndarray) -> Image.Image:
    return Image.fromarray(values.astype(np.float32), mode="F")


CASES = {
    "L": lambda: Image.new("L", (40, 40), round(GRAY * 255)),
    "RGB": lambda: Image.new("RGB", (40, 40), (round(GRAY * 255),) * 3),
    "I;16 png": lambda: Image.fromarray(np.full((40, 40), round(GRAY * 65535), np.uint16)),
    "F in [0, 1]": lambda: float_image(np.full((40, 40), GRAY)),
    "F in [0, 255]": lambda: float_image(np.full((40, 40), GRAY * 255)),
    "P palette": lambda: Image.new("RGB", (40, 40), (round(GRAY * 255),) * 3).convert("P"),
    "LA opaque": lambda: Image.new("LA", (40, 40), (round(GRAY * 255), 255)),
    "RGBA opaque": lambda: Image.new("RGBA", (40, 40), (round(GRAY * 255),) * 3 + (255,)),
    "CMYK": lambda: Image.new("RGB", (40, 40), (round(GRAY * 255),) * 3).convert("CMYK"),
    "YCbCr": lambda: Image.new("RGB", (40, 40), (round(GRAY * 255),) * 3).convert("YCbCr"),
}
SUFFIX = {"F in [0, 1]": ".tif", "F in [0, 255]": ".tif", "CMYK": ".tif", "YCbCr": ".tif", "I;16 png": ".png"}


@pytest.mark.parametrize("mode", list(CASES))
def test_every_mode_reaches_the_network_with_its_intended_brightness(mode: str, tmp_path: Path) -> None:
    path = save(tmp_path, "img" + SUFFIX.get(mode, ".png"), CASES[mode]())
    assert mean_brightness(path) == pytest.approx(GRAY, abs=0.01), mode


def test_a_float_tiff_slightly_above_1_keeps_its_brightness(tmp_path: Path) -> None:
    values = np.full((40, 40), GRAY)
    values[0, :5] = 1.03  # a little overshoot (resampling, HDR export): still the [0, 1] scale, not black
    path = save(tmp_path, "over.tif", float_image(values))
    assert mean_brightness(path) == pytest.approx(GRAY, abs=0.01)


def test_a_float_tiff_slightly_below_0_is_refused(tmp_path: Path) -> None:
    values = np.full((40, 40), GRAY)
    values[0, 0] = -0.2
    with pytest.raises(UnreadableImage, match=r"float pixels in \[-0.2"):
        load_rgb(save(tmp_path, "under.tif", float_image(values)))


@pytest.mark.parametrize("high", [5.0, 300.0, float("nan")])
def test_a_float_range_of_no_clear_scale_is_refused_by_name(high: float, tmp_path: Path) -> None:
    values = np.full((40, 40), 0.5)
    values[0, 0] = high
    with pytest.raises(UnreadableImage, match="float pixels"):
        load_rgb(save(tmp_path, "odd.tif", float_image(values)))


def test_transparency_is_composited_over_white_not_its_hidden_colour(tmp_path: Path) -> None:
    # a logo on a transparent background whose hidden colour is black: shown (and trained) on white
    rgba = Image.new("RGBA", (40, 40), (0, 0, 0, 0))
    for name, image in {"rgba.png": rgba, "la.png": rgba.convert("LA"), "p.png": rgba.convert("P")}.items():
        assert mean_brightness(save(tmp_path, name, image)) == pytest.approx(1.0, abs=0.01), name
    half = Image.new("RGBA", (40, 40), (0, 0, 0, 128))  # half-transparent black over white: mid grey
    assert mean_brightness(save(tmp_path, "half.png", half)) == pytest.approx(0.5, abs=0.02)


def test_lab_keeps_its_lightness(tmp_path: Path) -> None:
    path = save(tmp_path, "lab.tif", Image.new("LAB", (40, 40), (round(GRAY * 255), 128, 128)))
    assert mean_brightness(path) == pytest.approx(GRAY, abs=0.05)  # L* lightness vs sRGB: close, not equal


def test_a_mode_pil_cannot_convert_is_refused_by_name() -> None:
    def cannot(mode: str) -> Image.Image:
        raise ValueError(f"conversion from XYZ to {mode} not supported")

    image = SimpleNamespace(mode="XYZ", info={}, convert=cannot)  # what PIL opens but cannot convert
    with pytest.raises(UnreadableImage, match="pixel mode XYZ cannot be read as RGB"):
        to_rgb8(image)  # type: ignore[arg-type]
