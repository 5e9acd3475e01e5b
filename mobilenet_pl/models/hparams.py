"""The layout of our training checkpoints: ``hyper_parameters`` (plain values, ``model`` = ``{"name",
"width", "small_input", ...}`` beside ``num_classes`` and ``in_chans``) and ``state_dict``
(``backbone.*``, ``classifier.*``, and ``ema.module.0.*`` / ``ema.module.1.*`` when the run kept an EMA).

Only reads values: no builder, no file access, so the converters and the Lightning module share it.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

from torch import Tensor

from mobilenet_pl.models.mobilenet import MobileNet
from mobilenet_pl.models.registry import resolve_model_name

StateDict = dict[str, Tensor]

# Hyperparameters the data set decides; they sit next to the ``model`` dict, not in it.
DATA_KEYS = ("num_classes", "in_chans")
_EMA_PREFIX = "ema.module."
# where a training checkpoint records the run settings a resumed run may change (trainer.max_epochs, ...)
RUN_SETTINGS_KEY = "mobilenet_pl_run"


def architecture_defaults() -> dict[str, Any]:
    """The architecture keywords of `MobileNet` with their defaults (the one place they are written)."""
    params = inspect.signature(MobileNet.__init__).parameters.values()
    return {p.name: p.default for p in params if p.kind == p.KEYWORD_ONLY and p.name not in DATA_KEYS}


def model_hparams(model: Mapping[str, Any]) -> dict[str, Any]:
    """``{"name": ..., **architecture}`` with the canonical name and every default filled in.

    Raises:
        ValueError: an unknown model name or a key that is not an architecture keyword.
    """
    defaults = architecture_defaults()
    if "name" not in model:
        raise ValueError(f"model.name is missing: choose one of the registered models ({model!r} given)")
    unknown = sorted(set(model) - set(defaults) - {"name"})
    if unknown:
        raise ValueError(f"model.{unknown[0]} is not a model keyword; the keywords are {sorted(defaults)}")
    return {
        "name": resolve_model_name(str(model["name"])),
        **defaults,
        **{k: v for k, v in model.items() if k != "name"},
    }


def lightning_weights(state_dict: Mapping[str, Tensor], ema: bool = True) -> StateDict:
    """A plain MobileNet state dict from a MobileNetClassifier ``state_dict``: the EMA copy when it
    has one and ``ema``, else the trained weights."""
    use_ema = ema and any(key.startswith(_EMA_PREFIX) for key in state_dict)
    parts = (
        {f"{_EMA_PREFIX}0.": "", f"{_EMA_PREFIX}1.": "classifier."}
        if use_ema
        else {"backbone.": "", "classifier.": "classifier."}
    )
    out: StateDict = {}
    for key, value in state_dict.items():
        for prefix, replacement in parts.items():
            if key.startswith(prefix):
                out[replacement + key[len(prefix) :]] = value
    return out


def is_our_checkpoint(obj: Any) -> bool:
    """A MobileNetClassifier checkpoint: a ``state_dict`` and ``hyper_parameters`` whose ``model`` is a dict."""
    if not (isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping)):
        return False
    hparams = obj.get("hyper_parameters")
    return isinstance(hparams, Mapping) and isinstance(hparams.get("model"), Mapping)
