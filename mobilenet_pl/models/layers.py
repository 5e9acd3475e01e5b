"""Small building blocks shared by both MobileNet generations."""

from __future__ import annotations

from collections.abc import Callable

from timm.layers import get_act_layer

# timm's channel rounding is the rule torchvision and TF-slim use (tests/models/test_layers.py): re-exported as ours
from timm.layers import make_divisible as make_divisible
from torch import Tensor, nn

ActLayer = Callable[..., nn.Module]


def resolve_act_layer(act_layer: str | ActLayer) -> ActLayer:
    """Turn an activation name (``"relu6"``, ``"relu"``, ``"silu"``, ``"hardswish"``, any of timm's) or a
    module class into a factory (timm's ``get_act_layer``)."""
    # wraps timm's lookup only for an error that names the key and the choices (timm raises a bare KeyError)
    try:
        layer = get_act_layer(act_layer)
    except (KeyError, AttributeError):
        layer = None
    if not callable(layer):
        raise ValueError(
            f"act_layer={act_layer!r} is unknown; choose one of timm's activation names "
            "(relu6, relu, silu, hardswish, gelu, ...) or pass a module class"
        )
    return layer


class ConvBNAct(nn.Module):
    """Conv2d -> BatchNorm2d -> activation; ``act_layer=None`` gives the linear (no activation) variant.

    The children are named ``conv``, ``bn`` and ``act``: these names are part of the checkpoint format.
    """

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        kernel_size: int = 1,
        stride: int = 1,
        groups: int = 1,
        act_layer: ActLayer | None = nn.ReLU6,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_chs, out_chs, kernel_size, stride, padding=kernel_size // 2, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(out_chs)
        self.act = act_layer(inplace=True) if act_layer is not None else nn.Identity()
        self.has_act = act_layer is not None  # skip the Identity call: ~3% of batch-1 latency on CPU

    def forward(self, x: Tensor) -> Tensor:
        x = self.bn(self.conv(x))
        return self.act(x) if self.has_act else x
