"""State-dict conversion between torchvision, timm and ours, and where the ImageNet weights come from.

Foreign checkpoints are renamed key by key into our layout (``stem``, ``stages.i.j.conv_*``, ``head``,
``classifier``) and back (`to_foreign_state_dict`); the tensors themselves are untouched, so converted
models compute the same function.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from mobilenet_pl.models.specs import MOBILENET_V2

Source = Literal["torchvision", "timm", "mobilenet_pl"]
StateDict = dict[str, Tensor]

# Wrappers other tools put around a state dict: Lightning (backbone.), DDP (module.), torch.compile.
_WRAPPER_PREFIXES = ("backbone.", "module.", "_orig_mod.", "model.")


@dataclass(frozen=True)
class PretrainedWeights:
    """Where one set of ImageNet weights comes from: a timm model tag or a torchvision weights enum."""

    source: Literal["timm", "torchvision"]
    name: str


# (model, width) -> tag -> weights; the first tag is the default for pretrained=True.
PRETRAINED: dict[tuple[str, float], dict[str, PretrainedWeights]] = {
    ("mobilenet_v1", 1.0): {"timm": PretrainedWeights("timm", "mobilenetv1_100.ra4_e3600_r224_in1k")},
    ("mobilenet_v1", 1.25): {"timm": PretrainedWeights("timm", "mobilenetv1_125.ra4_e3600_r224_in1k")},
    ("mobilenet_v2", 0.5): {"timm": PretrainedWeights("timm", "mobilenetv2_050.lamb_in1k")},
    ("mobilenet_v2", 1.0): {
        "torchvision_v2": PretrainedWeights("torchvision", "MobileNet_V2_Weights.IMAGENET1K_V2"),
        "torchvision_v1": PretrainedWeights("torchvision", "MobileNet_V2_Weights.IMAGENET1K_V1"),
        "timm": PretrainedWeights("timm", "mobilenetv2_100.ra_in1k"),
    },
    ("mobilenet_v2", 1.4): {"timm": PretrainedWeights("timm", "mobilenetv2_140.ra_in1k")},
}


def detect_source(state_dict: Mapping[str, Tensor]) -> Source:
    """Tell which library wrote ``state_dict`` from its key names."""
    if "features.0.0.weight" in state_dict:
        return "torchvision"
    if "conv_stem.weight" in state_dict:
        return "timm"
    if "stem.conv.weight" in state_dict:
        return "mobilenet_pl"
    raise ValueError(
        f"state dict is not a MobileNet from torchvision, timm or mobilenet_pl (first keys: {list(state_dict)[:3]})"
    )


def convert_state_dict(state_dict: Mapping[str, Tensor], source: Source | None = None) -> StateDict:
    """Rename a torchvision or timm MobileNet state dict into ours (``source=None``: detect it).

    Example:
        >>> import torchvision
        >>> from mobilenet_pl import mobilenet_v2
        >>> theirs = torchvision.models.mobilenet_v2().state_dict()
        >>> _ = mobilenet_v2().load_state_dict(convert_state_dict(theirs, "torchvision"))
    """
    state_dict = unwrap_state_dict(state_dict)
    source = source or detect_source(state_dict)
    if source == "mobilenet_pl":
        return dict(state_dict)
    if source == "torchvision":
        rename = _torchvision_renamer()
    elif source == "timm":
        rename = _timm_renamer(state_dict)
    else:
        raise ValueError(f"source must be 'torchvision', 'timm' or 'mobilenet_pl', got {source!r}")
    return {rename(key): value for key, value in state_dict.items()}


# Models whose key layout `to_foreign_state_dict` writes (key names do not depend on the width).
_FOREIGN_TEMPLATES = {
    ("timm", "mobilenet_v1"): "mobilenetv1_100",
    ("timm", "mobilenet_v2"): "mobilenetv2_100",
    ("torchvision", "mobilenet_v2"): "mobilenet_v2",
}


def to_foreign_state_dict(
    state_dict: Mapping[str, Tensor], target: Literal["timm", "torchvision"], model: str = "mobilenet_v2"
) -> StateDict:
    """The reverse of `convert_state_dict`: our weights in timm's or torchvision's key layout.

    Example:
        >>> import torchvision
        >>> from mobilenet_pl import mobilenet_v2
        >>> ours = mobilenet_v2(width=0.5).state_dict()
        >>> _ = torchvision.models.mobilenet_v2(width_mult=0.5).load_state_dict(
        ...     to_foreign_state_dict(ours, "torchvision"))
    """
    template_name = _FOREIGN_TEMPLATES.get((target, model))
    if template_name is None:
        choices = [f"{t}/{m}" for t, m in _FOREIGN_TEMPLATES]
        raise ValueError(f"no {target} layout for {model}; available: {choices}")
    with torch.device("meta"):  # only the key names are needed: no memory, no init time
        if target == "timm":
            import timm

            template = timm.create_model(template_name).state_dict()
        else:
            import torchvision

            template = torchvision.models.mobilenet_v2().state_dict()
    rename = _torchvision_renamer() if target == "torchvision" else _timm_renamer(template)
    theirs = {rename(key): key for key in template}
    ours = unwrap_state_dict(state_dict)
    unknown = [key for key in ours if key not in theirs]
    if unknown:
        raise ValueError(f"keys with no {target} {model} counterpart: {unknown[:5]} (is the model right?)")
    return {theirs[key]: value for key, value in ours.items()}


def unwrap_state_dict(obj: Mapping[str, object]) -> StateDict:
    """Take the state dict out of a Lightning/trainer checkpoint and strip wrapper prefixes."""
    for container in ("state_dict", "model", "state_dict_ema"):
        inner = obj.get(container)
        if isinstance(inner, Mapping):
            obj = inner
            break
    out: StateDict = {}
    for key, value in obj.items():
        if not isinstance(value, Tensor):
            continue
        while key.startswith(_WRAPPER_PREFIXES):  # nested wrappers, e.g. model._orig_mod.stem...
            key = key.split(".", 1)[1]
        out[key] = value
    return out


def _torchvision_renamer():  # type: ignore[no-untyped-def]
    # torchvision numbers blocks 1..17 through ``features``; ours are grouped by the paper's rows.
    block_to_stage = [(i, j) for i, row in enumerate(MOBILENET_V2.stages) for j in range(row.n)]
    head_index = len(block_to_stage) + 1
    layer_names = {
        # block with expansion (conv.0 = expand, conv.1 = depthwise, conv.2/3 = linear projection)
        True: {
            "0.0": "conv_pw.conv",
            "0.1": "conv_pw.bn",
            "1.0": "conv_dw.conv",
            "1.1": "conv_dw.bn",
            "2": "conv_pwl.conv",
            "3": "conv_pwl.bn",
        },
        # the t=1 block has no expand conv
        False: {"0.0": "conv_dw.conv", "0.1": "conv_dw.bn", "1": "conv_pwl.conv", "2": "conv_pwl.bn"},
    }
    block_re = re.compile(r"features\.(\d+)\.conv\.(\d(?:\.\d)?)\.(\w+)$")

    def rename(key: str) -> str:
        if key.startswith("features.0."):
            return key.replace("features.0.0.", "stem.conv.").replace("features.0.1.", "stem.bn.")
        if key.startswith(f"features.{head_index}."):
            return key.replace(f"features.{head_index}.0.", "head.conv.").replace(
                f"features.{head_index}.1.", "head.bn."
            )
        if key.startswith("classifier.1."):
            return key.replace("classifier.1.", "classifier.")
        match = block_re.match(key)
        if not match:
            raise ValueError(f"unexpected torchvision key {key!r}")
        block, layer, suffix = int(match[1]), match[2], match[3]
        stage, index = block_to_stage[block - 1]
        return f"stages.{stage}.{index}.{layer_names[block > 1][layer]}.{suffix}"

    return rename


def _timm_renamer(state_dict: Mapping[str, Tensor]):  # type: ignore[no-untyped-def]
    # timm names BNs by position (bn1, bn2, bn3) inside a block; which conv each follows depends on
    # whether the block is an inverted residual (has conv_pwl) or a depthwise separable conv.
    is_v2 = "conv_head.weight" in state_dict
    inverted = {m[1] for key in state_dict if (m := re.match(r"(blocks\.\d+\.\d+)\.conv_pwl\.", key))}
    ir_names = {
        "conv_pw": "conv_pw.conv",
        "bn1": "conv_pw.bn",
        "conv_dw": "conv_dw.conv",
        "bn2": "conv_dw.bn",
        "conv_pwl": "conv_pwl.conv",
        "bn3": "conv_pwl.bn",
    }
    pw = "conv_pwl" if is_v2 else "conv_pw"  # V2's first block projects linearly
    ds_names = {"conv_dw": "conv_dw.conv", "bn1": "conv_dw.bn", "conv_pw": f"{pw}.conv", "bn2": f"{pw}.bn"}
    top_level = {
        "conv_stem": "stem.conv",
        "bn1": "stem.bn",
        "conv_head": "head.conv",
        "bn2": "head.bn",
        "classifier": "classifier",
    }

    def rename(key: str) -> str:
        match = re.match(r"(blocks\.(\d+)\.(\d+))\.(\w+)\.(\w+)$", key)
        if match:
            names = ir_names if match[1] in inverted else ds_names
            return f"stages.{match[2]}.{match[3]}.{names[match[4]]}.{match[5]}"
        layer, _, suffix = key.partition(".")
        if layer not in top_level:
            raise ValueError(f"unexpected timm key {key!r}")
        return f"{top_level[layer]}.{suffix}"

    return rename


def state_dict_problems(model: nn.Module, state_dict: Mapping[str, Tensor]) -> list[str]:
    """One line per kind of misfit (missing, unexpected, mis-shaped keys), in model order; empty when it fits."""
    expected = model.state_dict()
    # listed in model order, so the first line points at the first layer that does not fit
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    misshaped = [
        f"{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state_dict and state_dict[k].shape != v.shape
    ]
    return [
        f"  {label} ({len(keys)}): {', '.join(keys[:8])}{' ...' if len(keys) > 8 else ''}"
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", misshaped))
        if keys
    ]


def check_state_dict(model: nn.Module, state_dict: Mapping[str, Tensor]) -> None:
    """Raise a ValueError listing missing, unexpected and mis-shaped keys, or return silently."""
    problems = state_dict_problems(model, state_dict)
    if problems:
        raise ValueError("state dict does not fit the model (is the width or model right?):\n" + "\n".join(problems))


def available_pretrained() -> str:
    """One line per model listing the widths that have ImageNet weights and their tags."""
    by_model: dict[str, list[str]] = {}
    for (model, width), tags in PRETRAINED.items():
        by_model.setdefault(model, []).append(f"{width:g} ({', '.join(tags)})")
    return "; ".join(f"{model} width {', '.join(items)}" for model, items in by_model.items())


def _download(weights: PretrainedWeights) -> StateDict:
    # Both libraries cache what they download (TORCH_HOME, HF_HOME); nothing is fetched twice.
    if weights.source == "torchvision":
        import torchvision

        return torchvision.models.get_weight(weights.name).get_state_dict(progress=True)
    import timm

    return timm.create_model(weights.name, pretrained=True).state_dict()
