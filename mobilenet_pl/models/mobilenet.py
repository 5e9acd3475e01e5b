"""One MobileNet skeleton for both generations: stem -> stages -> head -> pool -> classifier.

Cross-block concerns (width rounding, stride and reduction bookkeeping, the drop-path schedule, feature
taps) live in `build_trunk`; the blocks only know their own layers. `MobileNet` (classifier) and
`MobileNetFeatures` (``features_only``) are siblings built from the same trunk, as timm's
``EfficientNet`` and ``EfficientNetFeatures`` are.
"""

# No `from __future__ import annotations` here: torch.fx copies the forward signatures' annotations into the
# code it generates, and TorchScript cannot resolve the postponed string 'Tensor' there (fx-then-script).

import math
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal

import torch
import torch.fx
import torch.utils.checkpoint
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import SelectAdaptivePool2d
from timm.models._features import feature_take_indices
from torch import Tensor, nn

from mobilenet_pl._checks import is_finite_number
from mobilenet_pl.models.blocks import DepthwiseSeparable, InvertedResidual
from mobilenet_pl.models.layers import ActLayer, ConvBNAct, make_divisible, resolve_act_layer
from mobilenet_pl.models.specs import ArchSpec, StageSpec

MIN_INPUT_SIZE = 32  # five stride-2 layers: below 32 px the last feature map is empty
InitScheme = Literal["default", "xavier"]
GLOBAL_POOLS = ("avg", "max", "avgmax", "catavgmax", "")  # timm's SelectAdaptivePool2d types; "": no pooling


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
    ok = is_finite_number(value) and (value >= 0 if allow_zero else value > 0)
    if not ok:
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be a number {bound}, got {value!r}")


def check_whole(name: str, value: Any, minimum: int) -> None:
    """Raise a ValueError naming ``name`` unless ``value`` is a whole number (an ``int``, not a bool) >= ``minimum``."""
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be a whole number >= {minimum}, got {value!r}")


# Past this many parameters a model is a typo (width=1000, num_classes=10**9), not a MobileNet: refused before
# any allocation (8 GiB of float32 weights; ImageNet MobileNetV2 at width 1.4 has 6.1 M).
MAX_PARAMS = 2**31


def check_size(arch: ArchSpec, width: float, in_chans: int, num_classes: int = 0) -> None:
    """Raise a ValueError before building when ``width``, ``in_chans`` and ``num_classes`` would ask for more
    than `MAX_PARAMS` parameters (counted from the paper table, channels rounded up)."""
    cin = arch.stem_chs * width + 8
    estimate = 9 * in_chans * cin
    for row in arch.stages:
        cout = row.c * width + 8
        for _ in range(row.n):  # expand (V2 only), depthwise 3x3, project
            hidden = cin * row.t
            estimate += (cin * hidden if row.t > 1 else 0) + 9 * hidden + hidden * cout
            cin = cout
    head = arch.head_chs * max(width, 1.0) + 8 if arch.head_chs else cin
    estimate += cin * head + head * num_classes
    if estimate > MAX_PARAMS:
        raise ValueError(
            f"width={width!r}, in_chans={in_chans!r} and num_classes={num_classes!r} would build up to "
            f"{estimate / 1e9:.3g} billion parameters (more than {MAX_PARAMS / 1e9:.3g} billion): check these values"
        )


def check_fraction(name: str, value: Any) -> None:
    """Raise a ValueError naming ``name`` unless ``0 <= value < 1``."""
    check_positive(name, value, allow_zero=True)
    if value >= 1:
        raise ValueError(f"{name} must be in [0, 1), got {value!r}")


def check_input_size(x: Tensor, min_size: int = MIN_INPUT_SIZE) -> Tensor:
    """Return ``x`` unchanged, or raise a ValueError if it is smaller than ``min_size`` on either side.

    ``min_size`` is a default argument because TorchScript cannot read module globals. Returning ``x``
    puts the check on the data path, so graph passes (fx dead-code elimination in torchvision's feature
    extractor) cannot drop it.
    """
    if x.shape[-2] < min_size or x.shape[-1] < min_size:
        raise ValueError(
            f"input size must be at least {min_size}x{min_size} (resolution >= {min_size}), "
            f"got {x.shape[-2]}x{x.shape[-1]}"
        )
    return x


# fx records the check as one call instead of tracing into it (it branches on the traced shape); the traced
# GraphModule still runs it on every forward.
torch.fx.wrap("check_input_size")


def default_pretrained_cfg(
    num_classes: int, in_chans: int, reduction: int, small_input: bool = False, **overrides: Any
) -> dict[str, Any]:
    """timm's ``pretrained_cfg`` for a model without released weights: input size, pooling, normalisation."""
    size = MIN_INPUT_SIZE if small_input else 224
    pool = math.ceil(size / reduction)
    return {
        "num_classes": num_classes,
        "input_size": (in_chans, size, size),
        "min_input_size": (in_chans, MIN_INPUT_SIZE, MIN_INPUT_SIZE),
        "pool_size": (pool, pool),
        "crop_pct": 0.875,
        "interpolation": "bilinear",
        "mean": IMAGENET_DEFAULT_MEAN,
        "std": IMAGENET_DEFAULT_STD,
        "first_conv": "stem.conv",
        "classifier": "classifier",
        **overrides,
    }


@dataclass
class Trunk:
    """What both model classes share: stem, stages, the feature taps and the trunk's output width."""

    stem: ConvBNAct
    stages: nn.Sequential
    feature_info: FeatureInfo
    out_chs: int
    act: ActLayer


def build_trunk(
    arch: ArchSpec,
    *,
    width: float,
    in_chans: int,
    drop_path_rate: float,
    act_layer: str | ActLayer,
    small_input: bool,
) -> Trunk:
    """Build stem and stages from a paper table; one tap closes each resolution (timm's ``feature_info``)."""
    check_positive("width", width)
    check_whole("in_chans", in_chans, 1)
    check_size(arch, width, in_chans)
    check_fraction("drop_path_rate", drop_path_rate)
    act = resolve_act_layer(act_layer)

    stem_chs = make_divisible(arch.stem_chs * width)
    stem_stride = 1 if small_input else 2
    stem = ConvBNAct(in_chans, stem_chs, 3, stem_stride, act_layer=act)

    strides = _stage_strides(arch.stages, small_input)
    total_blocks = sum(row.n for row in arch.stages)
    in_chs, reduction, block_idx = stem_chs, stem_stride, 0
    stages: list[nn.Module] = []
    feature_info = FeatureInfo()
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
            feature_info.append({"num_chs": out_chs, "reduction": reduction, "module": f"stages.{i}", "stage": i})
    return Trunk(stem, nn.Sequential(*stages), feature_info, in_chs, act)


def init_weights(module: nn.Module, scheme: InitScheme = "default") -> None:
    """Initialise one module: He-normal convs (torchvision) or Glorot uniform; BN to identity."""
    if isinstance(module, (nn.Conv2d, nn.Linear)):
        if scheme == "xavier":
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


def _check_init(init: Any) -> None:
    if init not in ("default", "xavier"):
        raise ValueError(f"init must be 'default' or 'xavier', got {init!r}")


class MobileNet(nn.Module):
    """MobileNet V1 or V2 built from a paper table (`mobilenet_pl.models.specs`), with timm's backbone API.

    V1: https://arxiv.org/abs/1704.04861 -- V2: https://arxiv.org/abs/1801.04381

    Args:
        arch: the architecture table.
        width: the width multiplier alpha; every layer's channels are ``make_divisible(c * width, 8)``.
            V2's final 1x1 conv keeps 1280 channels for ``width < 1`` (torchvision, timm and TF agree).
        num_classes: classifier outputs; 0 leaves no classifier (``forward`` returns pooled features).
        in_chans: input image channels.
        dropout: dropout before the classifier (timm's ``drop_rate``).
        drop_path_rate: stochastic depth on residual blocks; block k of N gets ``rate * k / N``.
        act_layer: ``"relu6"`` (reference implementations), ``"relu"`` (V1 paper), or a module class.
        init: ``"default"`` (He-normal convs, as torchvision) or ``"xavier"`` (Glorot uniform).
        small_input: for 32x32-ish images: stem stride 1 and the first stride-2 stage at stride 1.
        global_pool: ``"avg"``, ``"max"``, ``"avgmax"``, ``"catavgmax"`` (timm's pooling types), or ``""``
            for no pooling (``forward`` returns the feature map; needs ``num_classes=0``).

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
        global_pool: str = "avg",
    ) -> None:
        super().__init__()
        check_whole("num_classes", num_classes, 0)
        check_positive("width", width)
        check_whole("in_chans", in_chans, 1)
        check_size(arch, width, in_chans, num_classes)
        check_fraction("dropout", dropout)
        _check_init(init)
        _check_global_pool(global_pool, num_classes)
        trunk = build_trunk(
            arch,
            width=width,
            in_chans=in_chans,
            drop_path_rate=drop_path_rate,
            act_layer=act_layer,
            small_input=small_input,
        )
        self.stem, self.stages, self.feature_info = trunk.stem, trunk.stages, trunk.feature_info
        # never empty, so TorchScript infers List[int]
        self.tap_stages = [info["stage"] for info in self.feature_info]
        if arch.head_chs:
            head_chs = make_divisible(arch.head_chs * width) if width > 1.0 else arch.head_chs
            self.head: nn.Module = ConvBNAct(trunk.out_chs, head_chs, 1, act_layer=trunk.act)
        else:
            head_chs, self.head = trunk.out_chs, nn.Identity()
        self.num_features = head_chs
        self.in_chans = in_chans
        self.init = init
        self.grad_checkpointing = False
        self.dropout = nn.Dropout(dropout)
        self._set_head(num_classes, global_pool)
        self.apply(partial(init_weights, scheme=init))
        reduction = self.feature_info[-1]["reduction"]
        self.pretrained_cfg = self.default_cfg = default_pretrained_cfg(num_classes, in_chans, reduction, small_input)

    def _set_head(self, num_classes: int, global_pool: str) -> None:
        self.num_classes = num_classes
        self.global_pool = SelectAdaptivePool2d(pool_type=global_pool, flatten=bool(global_pool))
        self.head_hidden_size = self.num_features * self.global_pool.feat_mult()
        self.classifier = nn.Linear(self.head_hidden_size, num_classes) if num_classes > 0 else nn.Identity()

    def forward_features(self, x: Tensor) -> Tensor:
        """Image batch -> the last feature map (before pooling), ``num_features`` channels."""
        x = self.stem(check_input_size(x))
        if self.grad_checkpointing and not torch.jit.is_scripting():
            x = checkpoint_blocks(self.stages, x)
        else:
            x = self.stages(x)
        return self.head(x)

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        """Feature map -> logits (or the pooled ``head_hidden_size`` vector with ``pre_logits=True``)."""
        x = self.global_pool(x)
        if pre_logits:
            return x
        return self.classifier(self.dropout(x))

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))

    def forward_intermediates(
        self,
        x: Tensor,
        indices: int | list[int] | tuple[int, ...] | None = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> list[Tensor] | tuple[Tensor, list[Tensor]]:
        """The feature maps at the taps of ``feature_info`` (timm's contract), and the final features.

        Args:
            x: image batch.
            indices: tap indices to return; an int ``n`` takes the last ``n`` taps, None takes all.
            norm: accepted for timm's API; MobileNets have no final norm layer, so it changes nothing.
            stop_early: stop after the deepest requested tap (the final features are then that stage's).
            output_fmt: only ``"NCHW"``.
            intermediates_only: return only the list of tap outputs.

        Returns:
            The tap outputs, or ``(final features, tap outputs)``.
        """
        if output_fmt != "NCHW":
            raise ValueError(f"output_fmt must be 'NCHW', got {output_fmt!r}")
        take_indices, max_index = feature_take_indices(len(self.feature_info), _as_list(indices))
        take_stages = [self.tap_stages[i] for i in take_indices]
        stages = self.stages[: self.tap_stages[max_index] + 1] if stop_early else self.stages
        intermediates: list[Tensor] = []
        x = self.stem(check_input_size(x))
        for i, stage in enumerate(stages):
            x = checkpoint_blocks(stage, x) if self.grad_checkpointing else stage(x)
            if i in take_stages:
                intermediates.append(x)
        if intermediates_only:
            return intermediates
        if len(stages) == len(self.stages):  # the head follows the last stage only
            x = self.head(x)
        return x, intermediates

    def prune_intermediate_layers(
        self,
        indices: int | list[int] | tuple[int, ...] = 1,
        prune_norm: bool = False,
        prune_head: bool = True,
    ) -> list[int]:
        """Drop the stages after the deepest tap in ``indices`` (and the head); return the kept tap indices.

        The final 1x1 conv (``head``) and the classifier only fit the last stage's output, so they go when
        stages are cut, with ``prune_head`` or with ``prune_norm``; ``forward_features`` then ends at the tap.
        """
        take_indices, max_index = feature_take_indices(len(self.feature_info), _as_list(indices))
        keep = self.tap_stages[max_index] + 1
        cut = keep < len(self.stages)
        self.stages = self.stages[:keep]
        if cut or prune_head or prune_norm:
            self.head = nn.Identity()
            self.num_features = self.feature_info[max_index]["num_chs"]
            self.reset_classifier(0, "")
        return take_indices

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each block in the backward pass instead of keeping its activations (less memory)."""
        self.grad_checkpointing = enable

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        """Parameter groups for layer-wise lr decay: stem, each block (or stage if ``coarse``), head last."""
        return {
            "stem": r"^stem\.",
            "blocks": [(r"^stages\.(\d+)" if coarse else r"^stages\.(\d+)\.(\d+)", None), (r"^head\.", (99999,))],
        }

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.classifier

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """Replace the classifier (0 removes it) and optionally the pooling (``""``: none); keeps device/dtype.

        ``global_pool=None`` keeps the current pooling, except that a classifier on an unpooled model
        (``""``) gets ``"avg"`` back: a linear layer needs pooled features.
        """
        check_positive("num_classes", num_classes, allow_zero=True)
        if global_pool is None:
            global_pool = self.global_pool.pool_type or ("avg" if num_classes > 0 else "")
        _check_global_pool(global_pool, num_classes)
        like = self.stem.conv.weight
        self._set_head(num_classes, global_pool)
        self.classifier.to(device=like.device, dtype=like.dtype)
        self.classifier.apply(partial(init_weights, scheme=self.init))
        self.global_pool.train(self.training)
        self.classifier.train(self.training)


class MobileNetFeatures(nn.Module):
    """``features_only=True``: returns the feature maps at the taps in ``out_indices`` (timm's contract).

    A sibling of `MobileNet` built by the same `build_trunk`. The taps close each resolution (reductions
    2, 4, 8, 16, 32 by default); stages after the deepest selected tap, the head and the classifier are
    not built, so they are not in the state dict.
    """

    def __init__(
        self,
        arch: ArchSpec,
        *,
        out_indices: tuple[int, ...] | list[int] | None = None,
        width: float = 1.0,
        in_chans: int = 3,
        drop_path_rate: float = 0.0,
        act_layer: str | ActLayer = "relu6",
        init: InitScheme = "default",
        small_input: bool = False,
    ) -> None:
        super().__init__()
        _check_init(init)
        trunk = build_trunk(
            arch,
            width=width,
            in_chans=in_chans,
            drop_path_rate=drop_path_rate,
            act_layer=act_layer,
            small_input=small_input,
        )
        all_taps = trunk.feature_info
        indices = tuple(range(len(all_taps))) if out_indices is None else tuple(out_indices)
        if not indices or any(not isinstance(i, int) or not -len(all_taps) <= i < len(all_taps) for i in indices):
            raise ValueError(f"out_indices must be indices in [0, {len(all_taps) - 1}], got {out_indices!r}")
        selected = [all_taps[i] for i in indices]
        self.out_indices = indices
        self.feature_info = FeatureInfo(selected)
        # never empty, so TorchScript infers List[int]
        self.tap_stages = [info["stage"] for info in selected]
        self.stem = trunk.stem
        self.stages = trunk.stages[: max(self.tap_stages) + 1]
        self.in_chans = in_chans
        self.grad_checkpointing = False
        self.apply(partial(init_weights, scheme=init))
        cfg = default_pretrained_cfg(0, in_chans, all_taps[-1]["reduction"], small_input)
        self.pretrained_cfg = self.default_cfg = {
            k: v for k, v in cfg.items() if k not in ("num_classes", "classifier")
        }

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each block in the backward pass instead of keeping its activations (less memory)."""
        self.grad_checkpointing = enable

    def forward(self, x: Tensor) -> list[Tensor]:
        x = self.stem(check_input_size(x))
        features: list[Tensor] = []
        for i, stage in enumerate(self.stages):
            # an if statement, not a ternary: TorchScript skips only an if-branch under is_scripting()
            if self.grad_checkpointing and not torch.jit.is_scripting():  # noqa: SIM108
                x = checkpoint_blocks(stage, x)
            else:
                x = stage(x)
            if i in self.tap_stages:
                features.append(x)
        return features


def checkpoint_blocks(stages: nn.Module, x: Tensor) -> Tensor:
    """Run ``stages`` (or one stage) block by block under ``torch.utils.checkpoint``: only block inputs are kept.

    The backward pass re-runs each block in train mode; `_bn_stats_frozen` keeps that second run from
    moving the BatchNorm running statistics again, so they match a step without checkpointing (timm's
    ``checkpoint_seq`` updates them twice).
    """
    blocks = [b for s in stages.children() for b in (s.children() if isinstance(s, nn.Sequential) else [s])]
    for block in blocks:
        x = torch.utils.checkpoint.checkpoint(
            block, x, use_reentrant=False, context_fn=partial(_forward_then_recompute, block)
        )
    return x


def _forward_then_recompute(block: nn.Module) -> tuple[Any, Any]:
    return nullcontext(), _bn_stats_frozen(block)


@contextmanager
def _bn_stats_frozen(module: nn.Module) -> Iterator[None]:
    norms = [m for m in module.modules() if isinstance(m, nn.BatchNorm2d) and m.training and m.track_running_stats]
    saved = [(m.momentum, None if m.num_batches_tracked is None else m.num_batches_tracked.clone()) for m in norms]
    for m in norms:
        m.momentum = 0.0  # running = (1 - 0) * running + 0 * batch: unchanged
    try:
        yield
    finally:
        for m, (momentum, count) in zip(norms, saved, strict=True):
            m.momentum = momentum
            if count is not None and m.num_batches_tracked is not None:
                m.num_batches_tracked.copy_(count)


def _as_list(indices: int | list[int] | tuple[int, ...] | None) -> int | list[int] | None:
    return list(indices) if isinstance(indices, tuple) else indices


def _check_global_pool(global_pool: Any, num_classes: int) -> None:
    if global_pool not in GLOBAL_POOLS:
        raise ValueError(f"global_pool must be one of {list(GLOBAL_POOLS)}, got {global_pool!r}")
    if not global_pool and num_classes > 0:
        raise ValueError(f"global_pool='' (no pooling) needs num_classes=0, got num_classes={num_classes}")


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


__all__ = [
    "MIN_INPUT_SIZE",
    "FeatureInfo",
    "MobileNet",
    "MobileNetFeatures",
    "Trunk",
    "build_trunk",
    "check_input_size",
    "checkpoint_blocks",
    "default_pretrained_cfg",
    "init_weights",
]
