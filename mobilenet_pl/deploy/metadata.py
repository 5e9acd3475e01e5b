"""The metadata a deployment needs (class names, normalisation, resolution, model name and width), embedded
in every export: ONNX ``metadata_props``, the ExecuTorch program's constant method ``metadata`` (one JSON
string) or TorchScript ``_extra_files["metadata.json"]``."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from torch import nn

from mobilenet_pl._version import __version__

METADATA_FILE = "metadata.json"  # TorchScript _extra_files key


def in_chans(model: nn.Module) -> int:
    first_conv = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    if first_conv is None:
        raise ValueError("cannot infer the input channels: the model has no Conv2d")
    return int(first_conv.in_channels)


def build_metadata(
    model: nn.Module,
    resolution: int,
    class_names: Sequence[str] | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    name: str | None = None,
    width: float | None = None,
) -> dict[str, Any]:
    """The metadata embedded in an export; keys whose value is unknown (None) are left out."""
    channels = in_chans(model)
    for key, values in (("mean", mean), ("std", std)):
        if values is not None and len(values) != channels:
            raise ValueError(f"{key} has {len(values)} values but the model takes {channels} input channels")
    meta: dict[str, Any] = {
        "model": name or type(model).__name__,
        "width": width,
        "resolution": int(resolution),
        "in_chans": channels,
        "num_classes": getattr(model, "num_classes", None),
        "class_names": list(class_names) if class_names is not None else None,
        "mean": [float(v) for v in mean] if mean is not None else None,
        "std": [float(v) for v in std] if std is not None else None,
        "input_layout": "NCHW float32, normalised per channel as (x - mean) / std",
        "producer": f"mobilenet_pl {__version__}",
    }
    return {key: value for key, value in meta.items() if value is not None}


def encode_value(value: Any) -> str:
    # strings stay readable for other tools (Netron shows them as is); everything else is JSON
    return value if isinstance(value, str) else json.dumps(value)


def decode_value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def checkpoint_export_args(
    hp: dict[str, Any], mean: Sequence[float] | None = None, std: Sequence[float] | None = None
) -> dict[str, Any]:
    """The metadata arguments of every export (``class_names``, ``mean``, ``std``, ``name``, ``width``) for
    a checkpoint's hyperparameters: ImageNet's mean/std for a 3-channel model unless given."""
    from mobilenet_pl.lit.data import IMAGENET_MEAN, IMAGENET_STD
    from mobilenet_pl.models.registry import resolve_model_name

    if hp["in_chans"] == 3 and mean is None and std is None:
        mean, std = list(IMAGENET_MEAN), list(IMAGENET_STD)
    return {
        "class_names": hp.get("class_names") or [str(i) for i in range(hp["num_classes"])],
        "mean": None if mean is None else list(mean),
        "std": None if std is None else list(std),
        "name": resolve_model_name(hp["model"]["name"]),
        "width": hp["model"]["width"],
    }
