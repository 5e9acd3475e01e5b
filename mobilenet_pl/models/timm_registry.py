"""Our models in timm's registry: ``timm.create_model("mobilenet_pl_v2_100.tv2_in1k", features_only=True)``.

Registered on ``import mobilenet_pl`` (``mobilenet_pl.models`` imports this module), since timm has no
plugin discovery: its registry only knows the modules that ran ``register_model``. Each width the papers
report is one architecture; each set of peer weights we can convert is one tag with a real
``pretrained_cfg`` (where the file comes from, its input size, crop and normalisation). timm downloads or
reads the file; `convert_state_dict` renames its keys into ours (`_to_our_keys`), so a torchvision,
timm or mobilenet_pl state dict loads through ``pretrained_cfg_overlay=dict(file=...)`` too.
"""

from __future__ import annotations

from contextlib import nullcontext
from functools import partial
from typing import Any

import timm
import torch
import torchvision
from timm.models import build_model_with_cfg, generate_default_cfgs, get_pretrained_cfg, register_model
from timm.models._builder import pretrained_cfg_for_features
from torch import Tensor, nn

from mobilenet_pl.models.convert import PRETRAINED, PretrainedWeights, convert_state_dict
from mobilenet_pl.models.factory import CLASSIFIER_ONLY
from mobilenet_pl.models.mobilenet import MobileNet, MobileNetFeatures, default_pretrained_cfg
from mobilenet_pl.models.specs import MOBILENET_V1, MOBILENET_V2, ArchSpec

# timm variant -> (our model name, its table, width); the widths the papers report
VARIANTS: dict[str, tuple[str, ArchSpec, float]] = {
    **{
        f"mobilenet_pl_v1_{round(w * 100):03d}": ("mobilenet_v1", MOBILENET_V1, w) for w in (0.25, 0.5, 0.75, 1.0, 1.25)
    },
    **{f"mobilenet_pl_v2_{round(w * 100):03d}": ("mobilenet_v2", MOBILENET_V2, w) for w in (0.35, 0.5, 0.75, 1.0, 1.4)},
}
# torchvision's weight enums in timm's tag style (timm names them tv_in1k and tv2_in1k, e.g. resnet50)
_TORCHVISION_TAGS = {"IMAGENET1K_V1": "tv_in1k", "IMAGENET1K_V2": "tv2_in1k"}


def _weights_cfg(weights: PretrainedWeights) -> tuple[str, dict[str, Any]]:
    """The tag and pretrained_cfg of one peer checkpoint, read from the library that publishes it."""
    base = default_pretrained_cfg(1000, 3, 32)
    if weights.source == "timm":
        registered = get_pretrained_cfg(weights.name)
        if registered is None:
            raise RuntimeError(
                f"timm {timm.__version__} does not know {weights.name!r}; mobilenet_pl needs timm>=1.0.9"
            )
        theirs = registered.to_dict()
        keep = ("url", "hf_hub_id", "mean", "std", "crop_pct", "interpolation", "test_input_size", "test_crop_pct")
        cfg = {**base, **{k: v for k, v in theirs.items() if k in keep and v is not None}}
        cfg["hf_hub_id"] = f"timm/{weights.name}"  # the full id: timm would complete "timm/" with our name
        return weights.name.split(".", 1)[1], cfg
    enum = torchvision.models.get_weight(weights.name)
    resize = enum.transforms.keywords.get("resize_size", 256)
    crop = enum.transforms.keywords.get("crop_size", 224)
    return _TORCHVISION_TAGS[weights.name.rsplit(".", 1)[1]], {**base, "url": enum.url, "crop_pct": crop / resize}


def _default_cfgs() -> dict[str, Any]:
    cfgs: dict[str, Any] = {}
    for variant, (name, _, width) in VARIANTS.items():
        tagged = [_weights_cfg(weights) for weights in PRETRAINED.get((name, width), {}).values()]
        for tag, cfg in tagged or [("", default_pretrained_cfg(1000, 3, 32))]:
            cfgs[f"{variant}.{tag}" if tag else variant] = cfg  # the first tag is the default for pretrained=True
    return cfgs


default_cfgs = generate_default_cfgs(_default_cfgs())  # timm's register_model reads this module attribute


def _to_our_keys(state_dict: dict[str, Tensor], model: nn.Module) -> dict[str, Tensor]:
    """timm's pretrained_filter_fn: rename a torchvision/timm/our state dict into our keys.

    The features_only sibling does not build the head, the classifier or stages after its deepest tap;
    their weights are dropped here so the rest still loads strictly.
    """
    ours = convert_state_dict(state_dict)
    if isinstance(model, MobileNetFeatures):
        expected = model.state_dict()
        ours = {k: v for k, v in ours.items() if k in expected}
    return ours


def create(variant: str, pretrained: bool = False, **kwargs: Any) -> MobileNet | nn.Module:
    """Build a registered variant through timm's builder (pretrained_cfg, weights, features_only wrappers).

    ``features_only=True`` without ``feature_cls`` returns our `MobileNetFeatures`; with ``feature_cls``
    (``"getter"``, ``"hook"``, ``"dict"``, ``"fx"``, ...) timm wraps the full model as it does its own.
    """
    _, arch, width = VARIANTS[variant]
    if "drop_rate" in kwargs:  # timm's name for the classifier dropout
        kwargs["dropout"] = kwargs.pop("drop_rate")
    device, dtype = kwargs.pop("device", None), kwargs.pop("dtype", None)
    sibling = kwargs.get("features_only", False) and not {"feature_cls", "feature_cfg"} & set(kwargs)
    model_cls: Any = partial(MobileNet, arch, width=width)
    kwargs_filter: Any = None  # timm annotates it Tuple[str], but takes any tuple of names
    if sibling:
        kwargs.pop("features_only")
        model_cls = partial(MobileNetFeatures, arch, width=width)
        kwargs_filter = CLASSIFIER_ONLY
    with torch.device(device) if device is not None else nullcontext():
        model = build_model_with_cfg(
            model_cls,
            variant,
            pretrained,
            pretrained_filter_fn=_to_our_keys,
            kwargs_filter=kwargs_filter,
            feature_cfg={"flatten_sequential": True},
            **kwargs,
        )
    if sibling:
        model.pretrained_cfg = model.default_cfg = pretrained_cfg_for_features(model.pretrained_cfg)
    if device is not None or dtype is not None:
        model.to(device=device, dtype=dtype)
    return model


def _entrypoint(variant: str) -> Any:
    def entrypoint(pretrained: bool = False, **kwargs: Any) -> MobileNet | nn.Module:
        return create(variant, pretrained=pretrained, **kwargs)

    name, _, width = VARIANTS[variant]
    entrypoint.__name__ = entrypoint.__qualname__ = variant  # timm registers a function under its __name__
    entrypoint.__doc__ = f"mobilenet_pl's {name} at width {width:g}, built through timm's registry."
    return entrypoint


for _variant in VARIANTS:
    globals()[_variant] = register_model(_entrypoint(_variant))

__all__ = ["VARIANTS", "create", *VARIANTS]
