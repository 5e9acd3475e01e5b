"""Our training checkpoints without Lightning: the architecture and the weights, then a MobileNet.

A Lightning checkpoint of `mobilenet_pl.lit.MobileNetClassifier` holds ``hyper_parameters`` (plain
values: ``model`` = ``{"name", "width", "small_input", ...}``, ``num_classes``, ``in_chans``, ...) and a
``state_dict`` with ``backbone.*`` and ``classifier.*``, plus ``ema.module.0.*`` (backbone) and
``ema.module.1.*`` (classifier) when the run kept an EMA of the weights (timm ``ModelEmaV3``).
The file is read by `mobilenet_pl.models.weights.read_weights`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mobilenet_pl.models.factory import create_model
from mobilenet_pl.models.mobilenet import MobileNet
from mobilenet_pl.models.weights import Weights, load_weights, read_weights


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

    Raises:
        WeightsFileError: the file is not one of our checkpoints, or not a usable one.
    """
    weights = read_weights(path, checkpoint=True, ema=ema)
    return build_model(weights, features_only=features_only, out_indices=out_indices, num_classes=num_classes)


def build_model(
    weights: Weights,
    *,
    features_only: bool = False,
    out_indices: tuple[int, ...] | None = None,
    num_classes: int | None = None,
) -> MobileNet:
    """The MobileNet a training checkpoint describes (``weights.hparams``), with its weights, in eval mode."""
    if weights.hparams is None:
        raise ValueError("a plain state dict holds no architecture: read a training checkpoint (checkpoint=True)")
    hparams = weights.hparams
    arch = dict(hparams["model"])
    name = arch.pop("name")
    if features_only:  # no classifier to size
        extra: dict[str, Any] = {"features_only": True, "out_indices": out_indices}
    else:
        extra = {"num_classes": hparams["num_classes"] if num_classes is None else num_classes}
    model = create_model(name, in_chans=hparams["in_chans"], **arch, **extra)
    load_weights(model, weights.state_dict)
    return model.eval()
