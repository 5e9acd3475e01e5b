"""Callbacks of the training app: throughput, the W&B test report, and the reliability guards
(per-batch reseeding for exact resume, a checkpoint on SIGTERM, a stop on a non-finite loss)."""

from __future__ import annotations

import logging
import signal
import sys
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities.exceptions import SIGTERMException

log = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite; training stopped before saving those weights."""


class ReseedEachBatch(L.Callback):
    """Reseed every RNG from (seed, epoch, batch, rank) right before each training batch's step.

    Dropout, drop-path and Mixup/CutMix draws then depend on where in training a step is, not on what
    ran before it in this process (sanity check, iterator set-up, a resume). Together with the data's
    own per-sample seeding (``lit.data.SeededSamples``) and ``trainer.deterministic=true``, a run resumed
    from ``last.ckpt`` ends with the same weights as an uninterrupted one.
    """

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        # the rank too: DDP ranks draw different dropout masks, as independent processes would
        step_seed = hash((self.seed, trainer.current_epoch, batch_idx, trainer.global_rank)) % 2**32
        L.seed_everything(step_seed, workers=True, verbose=False)


class CheckpointOnSigterm(L.Callback):
    """On SIGTERM (scheduler kill, preemption warning) save ``last.ckpt`` and say so, at any moment of fit.

    During training the checkpoint is saved after the current batch; during validation (Lightning stops
    it after the current batch) it holds the whole training epoch; ``ckpt_path=.../last.ckpt`` (or
    ``auto_resume`` in the same run dir) continues from there. SIGTERM during testing stops the test with
    a message naming the checkpoint to evaluate, and no results.json (a partial test would mislead).
    The process then exits with status 143 (128 + SIGTERM, as a shell reports a SIGTERM kill): the run
    did not finish.
    """

    def __init__(self) -> None:
        self._saved_step: int | None = None

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if trainer.received_sigterm:
            self._save(trainer)

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if not isinstance(exception, SIGTERMException):
            return
        exception.code = 128 + signal.SIGTERM  # SystemExit's status; Lightning's is None (0: "finished")
        if trainer.state.fn == TrainerFn.FITTING:
            if self._saved_step != trainer.global_step:  # interrupted outside a training batch: validation
                self._save(trainer)
        elif trainer.is_global_zero:
            best = getattr(trainer.checkpoint_callback, "best_model_path", "") or "<checkpoint>"
            print(
                f"received SIGTERM during {_stage(trainer)}: stopped, no results written; "
                f"evaluate with python -m mobilenet_pl.eval ckpt_path={best} split=test",
                file=sys.stderr,
                flush=True,
            )

    def _save(self, trainer: L.Trainer) -> None:
        dirpath = getattr(trainer.checkpoint_callback, "dirpath", None) or trainer.default_root_dir
        path = Path(dirpath) / "last.ckpt"
        trainer.save_checkpoint(path)
        self._saved_step = trainer.global_step
        if trainer.is_global_zero:
            print(
                f"received SIGTERM during {_stage(trainer)}: saved {path} (epoch {trainer.current_epoch}, "
                f"step {trainer.global_step}); resume with ckpt_path={path}",
                flush=True,
            )


def _stage(trainer: L.Trainer) -> str:
    stage = trainer.state.stage
    return stage.value if stage is not None else "setup"


class StopOnNonFiniteLoss(L.Callback):
    """Stop with ``NonFiniteLossError`` when the training loss is NaN or infinite.

    The check accumulates on the device and reads it back only every ``check_every_n_steps`` steps and
    before validation and epoch-end checkpointing, so it adds no host synchronisation per step and no
    checkpoint is ever written from non-finite weights.
    """

    def __init__(self, check_every_n_steps: int = 10) -> None:
        self.check_every_n_steps = max(1, check_every_n_steps)
        self._bad: torch.Tensor | None = None

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if loss is None:
            return
        bad = ~torch.isfinite(loss.detach())
        self._bad = bad if self._bad is None else self._bad | bad
        if (batch_idx + 1) % self.check_every_n_steps == 0:
            self._check(trainer)

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._check(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._check(trainer)

    def _check(self, trainer: L.Trainer) -> None:
        if self._bad is None or not bool(self._bad):
            return
        self._bad = None
        dirpath = getattr(trainer.checkpoint_callback, "dirpath", None)
        last = Path(dirpath, "last.ckpt") if dirpath else None
        kept = f"the last good checkpoint is {last}" if last and last.is_file() else "no checkpoint was written yet"
        raise NonFiniteLossError(
            f"training loss became NaN/inf in epoch {trainer.current_epoch} (by step {trainer.global_step}); "
            f"{kept}. Lower optimizer.lr or set trainer.gradient_clip_val."
        )


class Throughput(L.Callback):
    """Training images per second over all epochs (all ranks together), excluding validation.

    Kept instead of ``lightning.pytorch.callbacks.ThroughputMonitor``: observed with lightning 2.6.6,
    that callback reports a rate only once its window (``window_size=100`` batches) is full -- after an
    8-batch fit ``Throughput.compute()`` has no ``samples_per_sec`` at all -- sends it only to loggers
    (nothing in ``trainer.callback_metrics`` or a public attribute for ``results.json``), and measures
    the last window, not the whole run.
    """

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
        batch = pl_module.transfer_batch_to_device(next(iter(datamodule.test_dataloader())), pl_module.device, 0)
        x, y = datamodule.on_after_batch_transfer(batch, 0)  # decodes there with data.decode_on=device
        x, y = x[: self.num_samples], y[: self.num_samples].cpu()
        with torch.no_grad():
            pred = pl_module.eval_forward(x).argmax(-1).cpu()  # type: ignore[operator]
        x = x.float().cpu()

        def label(i: int) -> str:
            return names[i] if i < len(names) else str(i)

        lo, hi = x.amin(dim=(1, 2, 3), keepdim=True), x.amax(dim=(1, 2, 3), keepdim=True)
        pixels = ((x - lo) / (hi - lo + 1e-8)).permute(0, 2, 3, 1).numpy()
        captions = [f"pred {label(int(p))} / true {label(int(t))}" for p, t in zip(pred, y, strict=True)]
        return list(pixels), captions
