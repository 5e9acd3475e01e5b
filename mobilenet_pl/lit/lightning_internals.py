"""Every access of ours to Lightning's private internals, in one place (checked against lightning 2.6.6).

Each function below reads or writes one thing Lightning has no public API for. ``tests/lit/
test_lightning_internals.py`` exercises each against the installed Lightning and fails naming the attribute
when a release moves it; the functions themselves raise `LightningInternalsError` with the same message
rather than silently doing nothing.

=========================================  =================================================================
access                                     why there is no public way
=========================================  =================================================================
``RichProgressBar._refresh_rate``          `cap_refresh_rate` (``callbacks.ProgressBarRate``): the redraw
                                           rate of a bar already built (Lightning's default bar, or a
                                           user's) has no setter; ``refresh_rate`` is a read-only property
                                           that the bar reads when its display starts.
``trainer._logger_connector``              `should_update_logs` (``MobileNetClassifier``): whether the
``.should_update_logs``                    loggers are written after this step; Lightning's own callbacks
                                           (``LearningRateMonitor``, ``ThroughputMonitor``) read the same.
``trainer.fit_loop.epoch_loop``            `train_position` (``ImageDataModule.state_dict``): batches done in
``.batch_progress.current.completed``,     the current epoch, and epochs processed (which counts an ended
``trainer.fit_loop.epoch_progress``        epoch before its validation and checkpoint, ``current_epoch``
``.current.processed``                     does not). The loops' progress classes are private
                                           (``_BatchProgress``, ``_Progress``).
``trainer.strategy.launcher.procs``        `detach_launched_processes` (``app.ddp_job``): the ranks this
                                           process launched; Lightning's watcher thread holds the same list
                                           and SIGKILLs this process when one is gone, so emptying it is the
                                           only way to report a lost rank before being killed.
=========================================  =================================================================

Considered and not used: ``RichProgressBar(refresh_rate=...)`` in ``conf/callbacks`` (a second bar would
collide with a user's own and with ``trainer.enable_progress_bar=false``, and needs ``rich``; see
``ProgressBarRate``); ``self.log(..., on_step=True, on_epoch=True)`` every step (~1 ms of Python per call,
3-4% of a 30 ms step: docs/performance.md); Lightning's stateful-loader support (a loader's ``state_dict`` is
taken when the checkpoint is written, one prefetched batch ahead of the batches trained on, and
``torchdata`` is not a dependency).
"""

from __future__ import annotations

import subprocess
from typing import Any

import lightning as L


class LightningInternalsError(RuntimeError):
    """A private attribute of Lightning's that this package relies on is gone or changed."""


def _moved(what: str) -> LightningInternalsError:
    return LightningInternalsError(
        f"lightning {L.__version__} has no {what} (mobilenet_pl.lit.lightning_internals needs updating for it)"
    )


def cap_refresh_rate(bar: Any, per_second: int) -> None:
    """Set a ``RichProgressBar``'s redraw rate (redraws per second) before its display starts."""
    if not isinstance(getattr(bar, "_refresh_rate", None), (int, float)):
        raise _moved("RichProgressBar._refresh_rate")
    bar._refresh_rate = per_second
    if bar.refresh_rate != per_second:
        raise _moved("RichProgressBar._refresh_rate behind RichProgressBar.refresh_rate")


def should_update_logs(trainer: L.Trainer) -> bool:
    """Whether Lightning writes the loggers after the current training step (``log_every_n_steps``)."""
    connector = getattr(trainer, "_logger_connector", None)
    if connector is None or not hasattr(type(connector), "should_update_logs"):
        raise _moved("Trainer._logger_connector.should_update_logs")
    return bool(connector.should_update_logs)


def train_position(trainer: L.Trainer) -> tuple[int, int]:
    """``(epochs processed, batches completed in the current epoch)`` of the fit loop.

    Epochs processed counts the running epoch once its last batch is done (before its validation and
    checkpoint), where ``trainer.current_epoch`` counts it only after those.
    """
    loop = trainer.fit_loop
    try:
        completed = loop.epoch_loop.batch_progress.current.completed
    except AttributeError:
        raise _moved("Trainer.fit_loop.epoch_loop.batch_progress.current.completed") from None
    try:
        processed = loop.epoch_progress.current.processed  # type: ignore[attr-defined]
    except AttributeError:
        raise _moved("Trainer.fit_loop.epoch_progress.current.processed") from None
    return int(processed), int(completed)


def detach_launched_processes(trainer: L.Trainer) -> list[subprocess.Popen[bytes]]:
    """The ranks this process launched (local ranks 1..), taken from Lightning's watcher, which would
    otherwise SIGKILL this process mid-report on seeing one gone (it polls every 5 s). Lightning hands the
    watcher the launcher's own ``procs`` list; an empty list means "all done" to it. Nothing without a
    launcher that starts processes (one process, or processes started separately)."""
    launcher = trainer.strategy.launcher
    procs = getattr(launcher, "procs", None)
    if procs is None:
        return []
    if not isinstance(procs, list):
        raise _moved("the launcher's procs list")
    children = list(procs)
    procs.clear()
    return children
