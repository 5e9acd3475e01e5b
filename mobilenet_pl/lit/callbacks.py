"""Callbacks of the training app: training throughput, and the W&B test-time report."""

from __future__ import annotations

import time
from typing import Any

import lightning as L
import torch


class Throughput(L.Callback):
    """Training images per second over all epochs (all ranks together), excluding validation."""

    def __init__(self) -> None:
        self.images = 0
        self.seconds = 0.0
        self._start: float | None = None

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start = time.perf_counter()

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self.images += len(batch[1]) * trainer.world_size

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._start is not None:
            self.seconds += time.perf_counter() - self._start
            self._start = None

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # validation runs inside the training epoch: stop the clock for it
        if self._start is not None and trainer.training:
            self.seconds += time.perf_counter() - self._start
            self._start = None

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.training and self._start is None and not trainer.sanity_checking:
            self._start = time.perf_counter()

    @property
    def images_per_sec(self) -> float:
        return self.images / self.seconds if self.seconds else 0.0


class WandbTestReport(L.Callback):
    """After testing, log the confusion matrix image and a few sample predictions to W&B."""

    def __init__(self, num_samples: int = 16) -> None:
        self.num_samples = num_samples

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        from lightning.pytorch.loggers import WandbLogger

        loggers = [lg for lg in trainer.loggers if isinstance(lg, WandbLogger)]
        confusion = getattr(pl_module, "test_confusion", None)
        if not loggers or confusion is None or not trainer.is_global_zero:
            return
        import wandb

        from mobilenet_pl.plots import _pyplot, confusion_matrix_figure

        names = list(pl_module.hparams.get("class_names") or [])
        fig = confusion_matrix_figure(confusion, names, "test confusion matrix")
        images, captions = self._samples(trainer, pl_module, names)
        loggers[0].experiment.log(
            {
                "test/confusion_matrix": wandb.Image(fig),
                "test/predictions": [wandb.Image(img, caption=cap) for img, cap in zip(images, captions, strict=True)],
            }
        )
        _pyplot().close(fig)

    def _samples(
        self, trainer: L.Trainer, pl_module: L.LightningModule, names: list[str]
    ) -> tuple[list[Any], list[str]]:
        datamodule = getattr(trainer, "datamodule", None)
        if datamodule is None:
            return [], []
        x, y = next(iter(datamodule.test_dataloader()))
        x, y = x[: self.num_samples], y[: self.num_samples]
        with torch.no_grad():
            pred = pl_module.eval_forward(x.to(pl_module.device)).argmax(-1).cpu()  # type: ignore[operator]

        def label(i: int) -> str:
            return names[i] if i < len(names) else str(i)

        lo, hi = x.amin(dim=(1, 2, 3), keepdim=True), x.amax(dim=(1, 2, 3), keepdim=True)
        pixels = ((x - lo) / (hi - lo + 1e-8)).permute(0, 2, 3, 1).numpy()
        captions = [f"pred {label(int(p))} / true {label(int(t))}" for p, t in zip(pred, y, strict=True)]
        return list(pixels), captions
