"""Callbacks of the training app: throughput, the W&B test report, the progress bar's rate, and the reliability
guards (per-batch reseeding for exact resume, a checkpoint on SIGTERM, a stop on a non-finite loss)."""

from __future__ import annotations

import logging
import math
import random
import signal
import sys
import time
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities.exceptions import SIGTERMException

from mobilenet_pl.lit import lightning_internals
from mobilenet_pl.lit.figures import confusion_matrix_figure, pyplot

log = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite; training stopped before saving those weights."""


class ReseedEachBatch(L.Callback):
    """Reseed every RNG from (seed, epoch, batch, rank) right before each training batch's step.

    Dropout, drop-path and Mixup/CutMix draws then depend on where in training a step is, not on what
    ran before it in this process (sanity check, iterator set-up, a resume). Together with the data's
    own per-sample seeding (``lit.data.sampling.SeededSamples``) and ``trainer.deterministic=true``, a run resumed
    from ``last.ckpt`` ends with the same weights as an uninterrupted one.

    Seeds what ``L.seed_everything`` seeds (``random``, NumPy, torch's CPU generator and the generators of the
    module's device) but not every backend torch knows of: ``torch.manual_seed`` walks CUDA, MPS, XPU and MTIA
    on every call, and with the environment variables ``seed_everything`` writes that took ~0.3 ms per step,
    1% of a small CPU step. (Worker seeds need no per-step update: ``SeededSamples`` seeds each sample.)
    """

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        # the rank too: DDP ranks draw different dropout masks, as independent processes would
        step_seed = hash((self.seed, trainer.current_epoch, batch_idx, trainer.global_rank)) % 2**32
        random.seed(step_seed)
        np.random.seed(step_seed)
        torch.default_generator.manual_seed(step_seed)
        device = pl_module.device.type
        if device == "cuda":
            torch.cuda.manual_seed_all(step_seed)
        elif device != "cpu":  # MPS, XPU, ...: torch's own walk over the backends
            torch.manual_seed(step_seed)


def _rank_ordered_mean(state: Any, bucket: Any) -> torch.futures.Future[torch.Tensor]:
    """DDP communication hook: gather every rank's gradient bucket and average them summed in rank order."""
    import torch.distributed as dist

    tensor = bucket.buffer()
    world = dist.get_world_size()
    gathered = [torch.empty_like(tensor) for _ in range(world)]
    future = dist.all_gather(gathered, tensor, async_op=True).get_future()  # type: ignore[union-attr]

    def mean(_: Any) -> torch.Tensor:
        total = gathered[0].clone()
        for other in gathered[1:]:
            total.add_(other)
        return total.div_(world)

    return future.then(mean)


class DeterministicGradientSum(L.Callback):
    """With ``trainer.deterministic=true`` and 3 or more DDP processes, average gradients summed in rank order.

    DDP's allreduce sums each gradient element in an order that depends on where the element lies in its bucket,
    and DDP lays buckets out anew after a run's first step. A run resumed from ``last.ckpt`` takes its first step
    in the initial layout where the uninterrupted run had the rebuilt one, and with 3 or more processes float
    addition's order shows (measured: 0.0047 max abs weight difference after 3 steps; with 2, a+b is the same
    either way). Gathering the buckets and summing them in rank order gives the same bits in any layout, at the
    cost of gathering (world size x the gradient bytes) instead of a ring allreduce: only when asked for
    determinism, and only where it matters.
    """

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        from torch.nn.parallel import DistributedDataParallel

        model = trainer.strategy.model
        if (
            trainer.world_size >= 3
            and torch.are_deterministic_algorithms_enabled()
            and isinstance(model, DistributedDataParallel)
            and getattr(trainer.strategy, "_ddp_comm_hook", None) is None  # the user's own hook wins
        ):
            # DDP reads the hook's annotations and refuses this module's postponed (string) ones: a bare lambda
            model.register_comm_hook(None, lambda state, bucket: _rank_ordered_mean(state, bucket))


class ProgressBarRate(L.Callback):
    """Redraw Lightning's default progress bar (``RichProgressBar``) at most ``max_per_second`` times a second.

    Lightning's default bar redraws up to 100 times a second, from a thread of its own, after every batch: at
    steps of 10 ms or more that is one redraw per step, 0.3-0.45 ms of that thread's CPU each (holding the GIL
    meanwhile), ~2% of a 30 ms step (docs/performance.md). 10 redraws a second look the same to a reader. A
    bar with a lower rate already, the TQDM bar (which limits itself), or no bar are left as they are.

    Kept instead of ``RichProgressBar(refresh_rate=10)`` in ``conf/callbacks``: that argument is the same
    redraws-per-second cap (its refresh thread sleeps ``1 / refresh_rate`` between redraws, lightning 2.6.6),
    but a bar given as a callback replaces Lightning's choice of bar rather than capping it: a user's own bar
    would make two (Lightning refuses that), ``trainer.enable_progress_bar=false`` would be refused too, and a
    machine without ``rich`` could not build it. Capping the bar Lightning (or the user) chose keeps all of
    those working; the rate has no setter, so it is set through `lightning_internals.cap_refresh_rate`.
    """

    def __init__(self, max_per_second: int = 10) -> None:
        self.max_per_second = max(1, max_per_second)

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        from lightning.pytorch.callbacks import RichProgressBar

        bar = trainer.progress_bar_callback
        # before the bar starts its display (sanity check, fit, validate or test start), which reads the rate
        if isinstance(bar, RichProgressBar) and bar.refresh_rate > self.max_per_second:
            lightning_internals.cap_refresh_rate(bar, self.max_per_second)


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
        self._signal = signal.SIGTERM  # the signal that stopped the run: SIGINT (Ctrl-C) takes the same path
        self._previous_sigint: Any = None

    # -- Ctrl-C: SIGINT is handed to Lightning's SIGTERM handler while a stage runs, so a KeyboardInterrupt
    # never lands in the middle of a step or a checkpoint write (which left a temporary file) ------------
    def _route_sigint(self, trainer: L.Trainer) -> None:
        import threading

        term = signal.getsignal(signal.SIGTERM)
        if self._previous_sigint is not None or not callable(term):
            return
        if threading.current_thread() is not threading.main_thread():  # signals go to the main thread only
            return

        def on_sigint(signum: int, frame: Any) -> None:
            self._signal = signal.SIGINT
            term(signal.SIGTERM, frame)  # Lightning's handler: stop after the current batch, as on SIGTERM

        self._previous_sigint = signal.signal(signal.SIGINT, on_sigint)

    def _restore_sigint(self) -> None:
        if self._previous_sigint is not None:
            signal.signal(signal.SIGINT, self._previous_sigint)
            self._previous_sigint = None

    # (after Lightning installs its SIGTERM handler, which happens after on_fit_start)
    def on_sanity_check_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._route_sigint(trainer)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._route_sigint(trainer)

    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._route_sigint(trainer)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._restore_sigint()

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._restore_sigint()

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._restore_sigint()

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if trainer.received_sigterm:
            self._save(trainer)

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self._restore_sigint()
        if not isinstance(exception, SIGTERMException):
            return
        exception.code = 128 + self._signal  # SystemExit's status; Lightning's is None (0: "finished")
        if trainer.state.fn == TrainerFn.FITTING:
            if self._saved_step != trainer.global_step:  # interrupted outside a training batch: validation
                self._save(trainer)
        elif trainer.is_global_zero:
            best = getattr(trainer.checkpoint_callback, "best_model_path", "") or "<checkpoint>"
            print(
                f"received {self._signal.name} during {_stage(trainer)}: stopped, no results written; "
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
                f"received {self._signal.name} during {_stage(trainer)}: saved {path} (epoch "
                f"{trainer.current_epoch}, step {trainer.global_step}); resume with ckpt_path={path}"
                f"{_resume_command(path)}",
                flush=True,
            )


def _resume_command(path: Path) -> str:
    """``: python -m PACKAGE.MODULE ARGS ckpt_path=PATH``, the command line of this process with the checkpoint
    added (a command started with ``python -m``); empty where the command cannot be told."""
    import shlex

    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    if spec is None or not spec.name:
        return ""
    # (the app's runner adds hydra.output_subdir=null for Hydra: it saves the run's record itself)
    args = [a for a in sys.argv[1:] if not a.startswith(("ckpt_path=", "+ckpt_path=", "hydra.output_subdir="))]
    return f": python -m {spec.name} {shlex.join([*args, f'ckpt_path={path}'])}"


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
        self._sum: torch.Tensor | None = None  # the training losses since the last check, summed on the device

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if loss is None:
            return
        # a float32 running sum is non-finite iff a term was (a loss near float32's 3e38 is divergence anyway):
        # one op per step instead of isfinite, not and or
        loss = loss.detach()
        self._sum = loss.to(torch.float32, copy=True) if self._sum is None else self._sum.add_(loss)
        if (batch_idx + 1) % self.check_every_n_steps == 0:
            self._check(trainer)

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._check(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._check(trainer)

    def _check(self, trainer: L.Trainer) -> None:
        if self._sum is None:
            return
        finite = bool(torch.isfinite(self._sum))
        self._sum = None
        if finite:
            return
        dirpath = getattr(trainer.checkpoint_callback, "dirpath", None)
        last = Path(dirpath, "last.ckpt") if dirpath else None
        kept = f"the last good checkpoint is {last}" if last and last.is_file() else "no checkpoint was written yet"
        raise NonFiniteLossError(
            f"training loss became NaN/inf in epoch {trainer.current_epoch} (by step {trainer.global_step}); "
            f"{kept}. Lower optimizer.lr or set trainer.gradient_clip_val."
        )


class Throughput(L.Callback):
    """Steady-state training images per second (all ranks together) and the share of it spent waiting for data.

    The first ``warmup_steps`` batches of the fit are not timed: ``max(min_warmup_steps, warmup_fraction x
    the first epoch's batches)``, capped so at least one batch of the first epoch is timed. Those batches
    carry start-up costs (DataLoader workers, cuDNN autotuning, ``torch.compile``, allocator growth) that
    would make a short run look slow. Validation and what follows the last batch of an epoch (checkpoints)
    are not timed either; the DataLoader's start at each later epoch is, since it recurs.

    ``data_wait_fraction`` is the timed share spent between one batch's ``on_train_batch_end`` and the next
    batch's ``on_train_batch_start``: fetching it from the DataLoader, the copy to the device and
    ``on_after_batch_transfer``. A high share means the run is input-bound.

    The clock is read on the host. On an accelerator the steps run asynchronously, so the device is
    synchronised at the edges of each timed stretch only (never per step); the per-batch wait is then the
    time the host was blocked on the input pipeline, which is when the device starves.

    Kept instead of ``lightning.pytorch.callbacks.ThroughputMonitor``: observed with lightning 2.6.6,
    that callback reports a rate only once its window (``window_size=100`` batches) is full -- after an
    8-batch fit ``Throughput.compute()`` has no ``samples_per_sec`` at all -- sends it only to loggers
    (nothing in ``trainer.callback_metrics`` or a public attribute for ``results.json``), measures the
    last window, not the whole run, and has no data-wait share.
    """

    def __init__(self, min_warmup_steps: int = 5, warmup_fraction: float = 0.1) -> None:
        self.min_warmup_steps = max(0, min_warmup_steps)
        self.warmup_fraction = warmup_fraction
        self.warmup_steps: int | None = None  # decided when the first epoch's length is known
        self.images = 0  # timed images, all ranks
        self.seconds = 0.0  # timed wall time
        self.wait_seconds = 0.0  # of which waiting for the next batch
        self._steps_seen = 0
        self._mark: float | None = None  # end of the last timed event; None while the clock is stopped
        self._opened = 0.0  # start of the current timed stretch

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.warmup_steps is None:
            self.warmup_steps = self._warmup(trainer.num_training_batches)
        if self._steps_seen >= self.warmup_steps:
            self._open(pl_module)

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if self._mark is not None:
            self.wait_seconds += time.perf_counter() - self._mark

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self._steps_seen += 1
        if self._mark is not None:
            self.images += len(batch[1]) * trainer.world_size
            self._mark = time.perf_counter()
        elif self.warmup_steps is not None and self._steps_seen == self.warmup_steps:
            self._open(pl_module)  # warm-up over: time from here

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # validation inside fit (trainer.training is False meanwhile): stop the clock for it
        if trainer.state.fn == "fit":
            self._close(pl_module)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        warm = self.warmup_steps is not None and self._steps_seen >= self.warmup_steps
        if trainer.state.fn == "fit" and not trainer.sanity_checking and warm:
            self._open(pl_module)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._close(pl_module)

    def _warmup(self, first_epoch_batches: float) -> int:
        if not math.isfinite(first_epoch_batches):
            return self.min_warmup_steps
        batches = int(first_epoch_batches)
        wanted = max(self.min_warmup_steps, math.ceil(self.warmup_fraction * batches))
        return max(0, min(wanted, batches - 1))

    def _open(self, pl_module: L.LightningModule) -> None:
        _synchronize(pl_module.device)
        self._opened = self._mark = time.perf_counter()

    def _close(self, pl_module: L.LightningModule) -> None:
        if self._mark is None:
            return
        # timed: up to the last batch's end (not the epoch's tail or a validation's start), plus however
        # long the device still needs for the steps queued by then
        before = time.perf_counter()
        _synchronize(pl_module.device)
        self.seconds += self._mark - self._opened + time.perf_counter() - before
        self._mark = None

    @property
    def images_per_sec(self) -> float:
        return self.images / self.seconds if self.seconds else 0.0

    @property
    def data_wait_fraction(self) -> float:
        return self.wait_seconds / self.seconds if self.seconds else 0.0


def _synchronize(device: torch.device) -> None:
    """Wait for the work queued on a CUDA device (the host clock would otherwise stop too early)."""
    if device.type == "cuda" and torch.cuda.is_available():
        torch.cuda.synchronize(device)


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

        names = list(pl_module.hparams.get("class_names") or [])
        fig = confusion_matrix_figure(confusion, names, "test confusion matrix")
        images, captions = self._samples(trainer, pl_module, names)
        loggers[0].experiment.log(
            {
                "test/confusion_matrix": wandb.Image(fig),
                "test/predictions": [wandb.Image(img, caption=cap) for img, cap in zip(images, captions, strict=True)],
            }
        )
        pyplot().close(fig)

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
