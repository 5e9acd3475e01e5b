"""One MobileNet skeleton for both generations: stem -> stages -> head -> pool -> classifier.

Cross-block concerns (width rounding, stride and reduction bookkeeping, the drop-path schedule, feature
taps) live here; the blocks only know their own layers.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from torch import Tensor, nn

from mobilenet_pl.models.blocks import DepthwiseSeparable, InvertedResidual
from mobilenet_pl.models.layers import ActLayer, ConvBNAct, make_divisible, resolve_act_layer
from mobilenet_pl.models.specs import ArchSpec, StageSpec

MIN_INPUT_SIZE = 32
InitScheme = Literal["default", "xavier"]


class FeatureInfo(list):  # type: ignore[type-arg]
    """timm-style feature metadata: a list of dicts with ``num_chs``, ``reduction`` and ``module``."""

    def channels(self) -> list[int]:
        return [info["num_chs"] for info in self]

    def reduction(self) -> list[int]:
        return [info["reduction"] for info in self]

    def module_name(self) -> list[str]:
        return [info["module"] for info in self]


def check_positive(name: str, value: Any, *, allow_zero: bool = False) -> None:
    """Raise a ValueError naming ``name`` unless ``value`` is a real number > 0 (or >= 0)."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (value >= 0 if allow_zero else value > 0)
    if not ok:
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be a number {bound}, got {value!r}")


def check_fraction(name: str, value: Any) -> None:
    """Raise a ValueError naming ``name`` unless ``0 <= value < 1``."""
    check_positive(name, value, allow_zero=True)
    if value >= 1:
        raise ValueError(f"{name} must be in [0, 1), got {value!r}")


class MobileNet(nn.Module):
    """MobileNet V1 or V2 built from a paper table (`mobilenet_pl.models.specs`).

    V1: https://arxiv.org/abs/1704.04861 -- V2: https://arxiv.org/abs/1801.04381

    Args:
        arch: the architecture table.
        width: the width multiplier alpha; every layer's channels are ``make_divisible(c * width, 8)``.
            V2's final 1x1 conv keeps 1280 channels for ``width < 1`` (torchvision, timm and TF agree).
        num_classes: classifier outputs; 0 leaves no classifier (``forward`` returns pooled features).
        in_chans: input image channels.
        dropout: dropout before the classifier.
        drop_path_rate: stochastic depth on residual blocks; block k of N gets ``rate * k / N``.
        act_layer: ``"relu6"`` (reference implementations), ``"relu"`` (V1 paper), or a module class.
        init: ``"default"`` (He-normal convs, as torchvision) or ``"xavier"`` (Glorot uniform).
        small_input: for 32x32-ish images: stem stride 1 and the first stride-2 stage at stride 1.

    Example:
        >>> import torch
        >>> from mobilenet_pl import mobilenet_v2
        >>> mobilenet_v2(width=0.5, num_classes=10)(torch.randn(1, 3, 64, 64)).shape
        torch.Size([1, 10])
    """

    def __init__(
        self,
        arch: ArchSpec,
        *,
        width: float = 1.0,
        num_classes: int = 1000,
        in_chans: int = 3,
        dropout: float = 0.2,
        drop_path_rate: float = 0.0,
        act_layer: str | ActLayer = "relu6",
        init: InitScheme = "default",
        small_input: bool = False,
    ) -> None:
        super().__init__()
        check_positive("width", width)
        check_positive("num_classes", num_classes, allow_zero=True)
        check_positive("in_chans", in_chans)
        check_fraction("dropout", dropout)
        check_fraction("drop_path_rate", drop_path_rate)
        if init not in ("default", "xavier"):
            raise ValueError(f"init must be 'default' or 'xavier', got {init!r}")
        act = resolve_act_layer(act_layer)

        stem_chs = make_divisible(arch.stem_chs * width)
        stem_stride = 1 if small_input else 2
        self.stem = ConvBNAct(in_chans, stem_chs, 3, stem_stride, act_layer=act)

        strides = _stage_strides(arch.stages, small_input)
        total_blocks = sum(row.n for row in arch.stages)
        in_chs, reduction, block_idx = stem_chs, stem_stride, 0
        stages: list[nn.Module] = []
        self.feature_info = FeatureInfo()
        for i, (row, stride) in enumerate(zip(arch.stages, strides, strict=True)):
            out_chs = make_divisible(row.c * width)
            blocks: list[nn.Module] = []
            for j in range(row.n):
                block_stride = stride if j == 0 else 1
                rate = drop_path_rate * block_idx / total_blocks
                blocks.append(_make_block(row, in_chs, out_chs, block_stride, act, rate))
                in_chs, block_idx = out_chs, block_idx + 1
            stages.append(nn.Sequential(*blocks))
            reduction *= stride
            # A feature tap closes each resolution: the last stage before the next stride-2 stage.
            if i == len(strides) - 1 or strides[i + 1] > 1:
                self.feature_info.append(
                    {"num_chs": out_chs, "reduction": reduction, "module": f"stages.{i}", "stage": i}
                )
        self.stages = nn.Sequential(*stages)

        if arch.head_chs:
            head_chs = make_divisible(arch.head_chs * width) if width > 1.0 else arch.head_chs
            self.head: nn.Module = ConvBNAct(in_chs, head_chs, 1, act_layer=act)
        else:
            head_chs, self.head = in_chs, nn.Identity()
        self.num_features = head_chs
        self.num_classes = num_classes
        self.dropout = nn.Dropout(dropout)
        self.classifier = self._new_classifier(num_classes)
        self.init = init
        self.apply(self._init_module)

    def _new_classifier(self, num_classes: int) -> nn.Module:
        return nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def _init_module(self, module: nn.Module) -> None:
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            if self.init == "xavier":
                nn.init.xavier_uniform_(module.weight)
            elif isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out")
            else:
                nn.init.normal_(module.weight, 0.0, 0.01)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    def forward_features(self, x: Tensor) -> Tensor:
        """Image batch -> the last feature map (before pooling), ``num_features`` channels."""
        _check_input_size(x)
        return self.head(self.stages(self.stem(x)))

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        """Feature map -> logits (or the pooled ``num_features`` vector with ``pre_logits=True``)."""
        x = x.mean((2, 3))
        if pre_logits:
            return x
        return self.classifier(self.dropout(x))

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.classifier

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the classifier with a fresh one of ``num_classes`` outputs (0 removes it)."""
        check_positive("num_classes", num_classes, allow_zero=True)
        self.num_classes = num_classes
        self.classifier = self._new_classifier(num_classes)
        self.classifier.apply(self._init_module)


class MobileNetFeatures(MobileNet):
    """``features_only=True``: returns the feature maps at the taps in ``out_indices`` (timm's contract).

    The taps close each resolution (reductions 2, 4, 8, 16, 32 by default); layers after the deepest
    selected tap, the head and the classifier are not built into the state dict.
    """

    def __init__(self, arch: ArchSpec, *, out_indices: tuple[int, ...] | None = None, **kwargs: Any) -> None:
        super().__init__(arch, num_classes=0, **kwargs)
        all_taps = list(self.feature_info)
        indices = tuple(range(len(all_taps))) if out_indices is None else tuple(out_indices)
        if not indices or any(not isinstance(i, int) or not -len(all_taps) <= i < len(all_taps) for i in indices):
            raise ValueError(f"out_indices must be indices in [0, {len(all_taps) - 1}], got {out_indices!r}")
        selected = [all_taps[i] for i in indices]
        self.out_indices = indices
        self.feature_info = FeatureInfo(selected)
        # never empty, so TorchScript infers List[int] (it cannot parse a postponed annotation here)
        self.tap_stages = [info["stage"] for info in selected]
        self.stages = self.stages[: max(self.tap_stages) + 1]
        del self.head, self.dropout, self.classifier

    def forward(self, x: Tensor) -> list[Tensor]:  # type: ignore[override]
        _check_input_size(x)
        x = self.stem(x)
        features: list[Tensor] = []
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i in self.tap_stages:
                features.append(x)
        return features


def _stage_strides(stages: tuple[StageSpec, ...], small_input: bool) -> list[int]:
    strides = [row.s for row in stages]
    if small_input:  # CIFAR-style: keep one more stage at full resolution (FACTS: ~94% on CIFAR-10 for V2)
        strides[strides.index(2)] = 1
    return strides


def _make_block(
    row: StageSpec, in_chs: int, out_chs: int, stride: int, act: ActLayer, drop_path_rate: float
) -> nn.Module:
    if row.block == "ds":
        return DepthwiseSeparable(in_chs, out_chs, stride, act)
    return InvertedResidual(in_chs, out_chs, stride, act, expansion=row.t, drop_path_rate=drop_path_rate)


def _check_input_size(x: Tensor) -> None:
    min_size = 32  # a local, not MIN_INPUT_SIZE: TorchScript cannot read module globals
    if x.shape[-2] < min_size or x.shape[-1] < min_size:
        raise ValueError(
            f"input size must be at least {min_size}x{min_size} (resolution >= 32), got {x.shape[-2]}x{x.shape[-1]}"
        )


__all__ = ["FeatureInfo", "MobileNet", "MobileNetFeatures"]
