"""The model to deploy, read from one of our checkpoints."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from mobilenet_pl.app.errors import ConfigError


def load_model(ckpt_path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """The plain MobileNet (eval mode, EMA weights if any) and hyperparameters of our checkpoint."""
    from mobilenet_pl.lit.classifier import MobileNetClassifier

    path = Path(ckpt_path).expanduser()
    if not path.is_file():
        raise ConfigError(f"ckpt_path={str(path)!r}: no such checkpoint file")
    try:
        module = MobileNetClassifier.load_from_checkpoint(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a truncated file, someone else's checkpoint, a pickle with code in it
        raise ConfigError(
            f"ckpt_path={str(path)!r} is not a mobilenet_pl checkpoint ({err.__class__.__name__})"
        ) from err
    return module.to_model(), dict(module.hparams)
