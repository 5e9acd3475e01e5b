"""The training app's callbacks, built from its ``callbacks`` config group (``conf/callbacks/default.yaml``).

Its own module so that the app (``train``) and the benchmark's Lightning section, which times the app's
set-up, build the same callbacks the same way without one entry point importing the other.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
from hydra.utils import instantiate
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
from omegaconf import DictConfig


def build_callbacks(callbacks: DictConfig | None, checkpoint_dir: Path, with_logger: bool) -> dict[str, L.Callback]:
    """The callbacks of the ``callbacks`` config node by name; checkpoints without a ``dirpath`` go to
    ``checkpoint_dir``. ``LearningRateMonitor`` is left out without a logger (it refuses to run then)."""
    built = {}
    for name, conf in (callbacks or {}).items():
        callback = instantiate(conf)
        if isinstance(callback, LearningRateMonitor) and not with_logger:
            continue
        if isinstance(callback, ModelCheckpoint) and callback.dirpath is None:
            callback.dirpath = str(checkpoint_dir)
        built[str(name)] = callback
    return built
