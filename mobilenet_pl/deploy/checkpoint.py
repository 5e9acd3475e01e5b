"""The model to deploy, read from one of our checkpoints (no Lightning needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from mobilenet_pl.models.checkpoint import build_model
from mobilenet_pl.models.weights import read_weights


def load_model(ckpt_path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """The plain MobileNet (eval mode, EMA weights if any) and hyperparameters of our checkpoint.

    Raises:
        WeightsFileError: ``ckpt_path=... is not allowed: ...``, one line naming what is wrong with the file.
    """
    weights = read_weights(ckpt_path, key="ckpt_path", checkpoint=True)
    return build_model(weights), dict(weights.hparams or {})
