"""Read our training checkpoints without Lightning: the architecture and the weights, then a MobileNet.

A Lightning checkpoint of `mobilenet_pl.lit.MobileNetClassifier` holds ``hyper_parameters`` (plain
values: ``model`` = ``{"name", "width", "small_input", ...}``, ``num_classes``, ``in_chans``, ...) and a
``state_dict`` with ``backbone.*`` and ``classifier.*``, plus ``ema.module.0.*`` (backbone) and
``ema.module.1.*`` (classifier) when the run kept an EMA of the weights (timm ``ModelEmaV3``).
Everything is read with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from mobilenet_pl.models.factory import create_model
from mobilenet_pl.models.hparams import StateDict, is_our_checkpoint, lightning_weights, upgrade_hparams
from mobilenet_pl.models.mobilenet import MobileNet


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
    _check_weights_fit(path, model, weights, keep_classifier=not features_only and num_classes is None)
    load_weights(model, weights)
    return model.eval()


def _check_weights_fit(path: str | Path, model: MobileNet, weights: StateDict, keep_classifier: bool) -> None:
    """The checkpoint's weights have the shapes its hyperparameters build: one line naming the first tensor that
    differs, never a silently fresh classifier (load_weights resets a head of another class count)."""
    expected = model.state_dict()
    differ = [
        f"{key} is {tuple(value.shape)} in the weights, {tuple(expected[key].shape)} from the hyperparameters"
        for key, value in weights.items()
        if key in expected
        and tuple(value.shape) != tuple(expected[key].shape)
        and (keep_classifier or not key.startswith("classifier."))
    ]
    if keep_classifier:
        differ += [f"{key} is missing from the weights" for key in expected if key not in weights]
    if differ:
        raise ValueError(
            f"checkpoint {str(path)!r}: its hyperparameters disagree with its weights "
            f"({len(differ)} difference(s); first: {differ[0]})"
        )
