"""Read our training checkpoints without Lightning: the architecture and the weights, then a MobileNet.

A Lightning checkpoint of `mobilenet_pl.lit.MobileNetClassifier` holds ``hyper_parameters`` (plain
values: ``model`` = ``{"name", "width", "small_input", ...}``, ``num_classes``, ``in_chans``, ...) and a
``state_dict`` with ``backbone.*`` and ``classifier.*``, plus ``ema.module.0.*`` (backbone) and
``ema.module.1.*`` (classifier) when the run kept an EMA of the weights (timm ``ModelEmaV3``).
Everything is read with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from mobilenet_pl.models.factory import create_model, resolve_model_name
from mobilenet_pl.models.mobilenet import MobileNet

StateDict = dict[str, Tensor]

# Hyperparameters the data set decides; they sit next to the ``model`` dict, not in it.
DATA_KEYS = ("num_classes", "in_chans")
_EMA_PREFIX = "ema.module."


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


def upgrade_hparams(hparams: Mapping[str, Any]) -> dict[str, Any]:
    """Hyperparameters in today's layout; mobilenet_pl 0.1 checkpoints (``model`` a name, the
    architecture keywords at the top level) are translated, today's are returned as they are."""
    out = dict(hparams)
    if isinstance(out.get("model"), str):
        arch = {key: out.pop(key) for key in architecture_defaults() if key in out}
        out["model"] = model_hparams({"name": out["model"], **arch})
    return out


def _load(path: str | Path) -> Any:
    file = Path(path).expanduser()
    if not file.is_file():
        raise FileNotFoundError(f"checkpoint {str(file)!r} does not exist")
    try:
        return torch.load(file, map_location="cpu", weights_only=True)
    except Exception as err:  # pickled code, a truncated file, an ONNX or TorchScript export
        first = (str(err).strip().splitlines() or [err.__class__.__name__])[0]
        hint = " (an ONNX/TorchScript export has BatchNorm folded away: read the training .ckpt)"
        raise ValueError(
            f"refusing to load {str(file)!r}: not a tensor-only checkpoint{hint if _is_export(file) else ''} "
            f"({first[:200]})"
        ) from err


def _is_export(file: Path) -> bool:
    return file.suffix in (".onnx", ".ts")


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
    return isinstance(obj, Mapping) and isinstance(obj.get("hyper_parameters"), Mapping) and "state_dict" in obj


def read_checkpoint(path: str | Path, ema: bool = True) -> tuple[dict[str, Any], StateDict]:
    """The hyperparameters (today's layout) and plain MobileNet weights of one of our checkpoints.

    Raises:
        ValueError: the file is not one of our checkpoints (e.g. a bare state dict: its architecture
            -- width, small_input -- cannot be read from it).
    """
    raw = _load(path)
    if not is_our_checkpoint(raw):
        raise ValueError(
            f"{str(path)!r} holds no mobilenet_pl hyperparameters (a bare state dict?): its architecture cannot "
            "be read; build the model yourself, e.g. mobilenet_v2(width=..., small_input=..., pretrained=path)"
        )
    hparams = upgrade_hparams(raw["hyper_parameters"])
    return hparams, lightning_weights(raw["state_dict"], ema=ema)


def from_checkpoint(
    path: str | Path,
    *,
    features_only: bool = False,
    out_indices: tuple[int, ...] | None = None,
    num_classes: int | None = None,
    ema: bool = True,
) -> MobileNet:
    """The MobileNet (or its ``features_only`` twin) a training run saved, architecture and weights.

    Model name, width, in_chans, small_input and the other architecture keywords come from the
    checkpoint, so nothing has to be repeated by hand.

    Args:
        path: a ``.ckpt`` written by ``python -m mobilenet_pl.train`` or ``MobileNetClassifier``.
        features_only: return the feature extractor (no head, no classifier).
        out_indices: feature taps for ``features_only``.
        num_classes: a new classifier (freshly initialised) with this many classes; None keeps the
            checkpoint's classifier.
        ema: take the EMA weights when the run kept them (what validation, test and eval used).
    """
    from mobilenet_pl.models.convert import load_weights

    hparams, weights = read_checkpoint(path, ema=ema)
    arch = dict(hparams["model"])
    name = arch.pop("name")
    if features_only:  # no classifier to size
        extra: dict[str, Any] = {"features_only": True, "out_indices": out_indices}
    else:
        extra = {"num_classes": hparams["num_classes"] if num_classes is None else num_classes}
    model = create_model(name, in_chans=hparams["in_chans"], **arch, **extra)
    load_weights(model, weights)
    return model.eval()
