"""The keyword-only builders, registered by name (``"v2"``) in `mobilenet_pl.models.registry`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal, TypedDict, overload

from typing_extensions import Unpack

from mobilenet_pl.models.layers import ActLayer
from mobilenet_pl.models.mobilenet import MobileNet, MobileNetFeatures
from mobilenet_pl.models.registry import build_registered, register_model
from mobilenet_pl.models.specs import MOBILENET_V1, MOBILENET_V2, ArchSpec

Model = MobileNet | MobileNetFeatures
# keywords that only concern the classifier, ignored with features_only=True (as timm does)
CLASSIFIER_ONLY = ("num_classes", "dropout", "global_pool")


class BuildKwargs(TypedDict, total=False):
    """Keywords shared by every builder except ``features_only``; see `MobileNet`."""

    width: float
    num_classes: int
    in_chans: int
    dropout: float
    drop_path_rate: float
    act_layer: str | ActLayer
    init: str  # "default" or "xavier" (InitScheme); checked when the model is built, naming the key
    small_input: bool
    global_pool: str
    out_indices: tuple[int, ...] | None
    pretrained: bool | str | Path


class ModelKwargs(BuildKwargs, total=False):
    """Keywords shared by every builder; see `MobileNet` and `MobileNetFeatures`."""

    features_only: bool


# The overloads tell type checkers which sibling comes back: MobileNetFeatures only with features_only=True.
@overload
def create_model(name: str, *, features_only: Literal[True], **kwargs: Unpack[BuildKwargs]) -> MobileNetFeatures: ...
@overload
def create_model(name: str, *, features_only: Literal[False] = ..., **kwargs: Unpack[BuildKwargs]) -> MobileNet: ...
@overload
def create_model(name: str, *, features_only: bool, **kwargs: Unpack[BuildKwargs]) -> Model: ...
def create_model(name: str, **kwargs: Any) -> Model:
    """Build a registered model by name, e.g. ``create_model("v2", width=0.75, num_classes=10)``."""
    return build_registered(name, **kwargs)


def _build(name: str, arch: ArchSpec, kwargs: ModelKwargs) -> Model:
    options: dict[str, Any] = dict(kwargs)
    pretrained = options.pop("pretrained", False)
    if not isinstance(pretrained, (bool, str, os.PathLike)):  # 123 would be taken as True
        raise ValueError(f"pretrained must be True/False, a weights tag or a file path, got {pretrained!r}")
    if isinstance(pretrained, os.PathLike):
        pretrained = Path(pretrained)
    features_only = options.pop("features_only", False)
    out_indices = options.pop("out_indices", None)
    model: Model
    if features_only:
        trunk_options = {k: v for k, v in options.items() if k not in CLASSIFIER_ONLY}
        model = MobileNetFeatures(arch, out_indices=out_indices, **trunk_options)
    else:
        if out_indices is not None:
            raise ValueError("out_indices is only valid with features_only=True")
        model = MobileNet(arch, **options)
    if pretrained:
        from mobilenet_pl.models.weights import load_pretrained

        load_pretrained(model, name, options.get("width", 1.0), pretrained)
    return model


@register_model
def mobilenet_v1(**kwargs: Unpack[ModelKwargs]) -> Model:
    """MobileNetV1 (Howard et al. 2017, https://arxiv.org/abs/1704.04861), keyword-only.

    Example:
        >>> mobilenet_v1(width=0.25).num_features
        256
    """
    return _build("mobilenet_v1", MOBILENET_V1, kwargs)


@register_model
def mobilenet_v2(**kwargs: Unpack[ModelKwargs]) -> Model:
    """MobileNetV2 (Sandler et al. 2018, https://arxiv.org/abs/1801.04381), keyword-only.

    Example:
        >>> mobilenet_v2(width=0.5).num_features
        1280
    """
    return _build("mobilenet_v2", MOBILENET_V2, kwargs)
