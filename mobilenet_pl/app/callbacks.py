"""The training app's callbacks, built from its ``callbacks`` config group (``conf/callbacks/default.yaml``).

Its own module so that the app (``train``) and the benchmark's Lightning section, which times the app's
set-up, build the same callbacks the same way without one entry point importing the other.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import lightning as L
from hydra.utils import instantiate
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
from omegaconf import DictConfig


class EpochLines(L.Callback):
    """One plain line per epoch (``epoch 3/10  val loss 0.412  val top-1 95.12%  14 s``), where the app draws no
    progress bar because stdout is not a terminal."""

    def __init__(self) -> None:
        self._started = time.perf_counter()

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._started = time.perf_counter()

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        metrics: dict[str, Any] = trainer.callback_metrics
        parts = [f"epoch {trainer.current_epoch + 1}/{trainer.max_epochs}"]
        if "val/loss" in metrics:
            parts.append(f"val loss {float(metrics['val/loss']):.3f}")
        if "val/acc1" in metrics:
            parts.append(f"val top-1 {100 * float(metrics['val/acc1']):.2f}%")
        parts.append(f"{time.perf_counter() - self._started:.0f} s")
        print("  ".join(parts), flush=True)


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
