"""The two block types: V1's depthwise separable conv and V2's inverted residual.

Sub-layer names (``conv_pw``, ``conv_dw``, ``conv_pwl``) are a checkpoint contract: renaming one breaks
every saved state dict.
"""

from __future__ import annotations

from torch import Tensor, nn

from mobilenet_pl.models.layers import ActLayer, ConvBNAct


class DepthwiseSeparable(nn.Module):
    """MobileNetV1 block (Howard et al. 2017, Fig. 3): 3x3 depthwise -> BN/act -> 1x1 pointwise -> BN/act.

    https://arxiv.org/abs/1704.04861
    """

    def __init__(self, in_chs: int, out_chs: int, stride: int, act_layer: ActLayer) -> None:
        super().__init__()
        self.conv_dw = ConvBNAct(in_chs, in_chs, 3, stride, groups=in_chs, act_layer=act_layer)  # dw
        self.conv_pw = ConvBNAct(in_chs, out_chs, 1, act_layer=act_layer)  # pw

    def forward(self, x: Tensor) -> Tensor:
        return self.conv_pw(self.conv_dw(x))


class InvertedResidual(nn.Module):
    """MobileNetV2 block (Sandler et al. 2018, Table 1): 1x1 expand -> 3x3 depthwise -> linear 1x1 project.

    The projection has no activation (the "linear bottleneck"); the shortcut joins the thin ends only when
    the block keeps both resolution and width. With ``expansion == 1`` the expand conv is omitted, as in
    the paper's first bottleneck. https://arxiv.org/abs/1801.04381
    """

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        stride: int,
        act_layer: ActLayer,
        expansion: int = 6,
        drop_path_rate: float = 0.0,
    ) -> None:
        super().__init__()
        hidden_chs = in_chs * expansion
        self.has_shortcut = stride == 1 and in_chs == out_chs
        self.conv_pw = ConvBNAct(in_chs, hidden_chs, 1, act_layer=act_layer) if expansion != 1 else nn.Identity()  # pw
        self.conv_dw = ConvBNAct(hidden_chs, hidden_chs, 3, stride, groups=hidden_chs, act_layer=act_layer)  # dw
        self.conv_pwl = ConvBNAct(hidden_chs, out_chs, 1, act_layer=None)  # pw-linear
        self.has_expand = expansion != 1
        self.drop_path = _drop_path(drop_path_rate) if self.has_shortcut else nn.Identity()
        self.has_drop_path = self.has_shortcut and drop_path_rate > 0

    def forward(self, x: Tensor) -> Tensor:
        # flags instead of calls to nn.Identity: each Python module call costs ~10 us at batch 1
        out = self.conv_pw(x) if self.has_expand else x
        out = self.conv_pwl(self.conv_dw(out))
        if self.has_shortcut:
            out = (self.drop_path(out) if self.has_drop_path else out) + x
        return out


def _drop_path(rate: float) -> nn.Module:
    if rate <= 0.0:
        return nn.Identity()
    from timm.layers import DropPath  # timm's stochastic depth (per-sample), imported only when used

    return DropPath(rate)
