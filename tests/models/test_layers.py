import pytest
from timm.layers import make_divisible as timm_make_divisible
from torchvision.models._utils import _make_divisible as tv_make_divisible

from mobilenet_pl.models.layers import make_divisible

WIDTHS = [0.25, 0.35, 0.5, 0.75, 1.0, 1.25, 1.3, 1.4, 2.0]
CHANNELS = [16, 24, 32, 64, 96, 160, 320, 1024, 1280]


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("channels", CHANNELS)
def test_make_divisible_matches_torchvision_and_timm(channels: int, width: float) -> None:
    value = channels * width
    assert make_divisible(value) == tv_make_divisible(value, 8) == timm_make_divisible(value, 8)


@pytest.mark.parametrize(
    ("value", "expected"),
    [(32 * 0.35, 16), (16 * 0.35, 8), (24 * 0.75, 24), (1.0, 8), (12.0, 16), (11.9, 16), (100.0, 104), (36, 40)],
)
def test_make_divisible_table(value: float, expected: int) -> None:
    # nearest multiple of 8, at least 8, and never more than 10% below the input
    assert make_divisible(value) == expected
