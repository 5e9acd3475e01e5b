"""The per-step work trimmed for speed keeps what it produced: the loggers' training loss,
the NaN guard, the per-batch reseeding."""

from __future__ import annotations

import csv
import io
import math
import random
from contextlib import redirect_stderr
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger
from torch.utils.data import DataLoader

from mobilenet_pl.lit.callbacks import NonFiniteLossError, ReseedEachBatch, StopOnNonFiniteLoss
from mobilenet_pl.lit.classifier import MobileNetClassifier


class RecordLosses(L.Callback):
    """Each step's loss and batch size, as the Trainer hands them to callbacks (independent of ``self.log``)."""

    def __init__(self) -> None:
        self.losses: list[tuple[int, float, int]] = []  # (epoch, loss, batch size)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        self.losses.append((trainer.current_epoch, float(loss), len(batch[1])))


def _module() -> MobileNetClassifier:
    return MobileNetClassifier({"name": "v2", "width": 0.25}, num_classes=4, resolution=32, optimizer={"name": "sgd"})


def _fit(module: L.LightningModule, data: Any, callbacks: list[L.Callback], tmp_path: Path, **kwargs: Any) -> L.Trainer:
    trainer = L.Trainer(
        accelerator="cpu",
        num_sanity_val_steps=0,
        limit_val_batches=0,
        enable_checkpointing=False,
        enable_model_summary=False,
        callbacks=callbacks,
        default_root_dir=str(tmp_path),
        **kwargs,
    )
    with redirect_stderr(io.StringIO()):  # the progress bar
        trainer.fit(module, train_dataloaders=DataLoader(data, batch_size=None))
    return trainer


def test_loggers_get_the_step_loss_every_interval_and_the_weighted_epoch_mean(tmp_path: Path) -> None:
    """What ``self.log("train/loss", on_step=True, on_epoch=True)`` wrote: ``train/loss_step`` at every
    ``log_every_n_steps``-th step with that step's loss, ``train/loss_epoch`` the batch-size-weighted mean."""
    # 7 batches of unequal sizes per epoch (the last one smaller, as a DataLoader without drop_last makes)
    data = [(torch.randn(n, 3, 32, 32), torch.randint(0, 4, (n,))) for n in (4, 4, 4, 4, 4, 4, 2)]
    record = RecordLosses()
    logger = CSVLogger(tmp_path)
    _fit(_module(), data, [record], tmp_path, max_epochs=2, logger=logger, log_every_n_steps=3)
    rows = list(csv.DictReader((Path(logger.log_dir) / "metrics.csv").read_text().splitlines()))
    steps = {int(r["step"]): float(r["train/loss_step"]) for r in rows if r.get("train/loss_step")}
    # Lightning writes after the global steps 3, 6, 9, 12 (1-based): steps 2, 5, 8, 11 in the CSV
    assert sorted(steps) == [2, 5, 8, 11]
    for step, value in steps.items():
        assert value == pytest.approx(record.losses[step][1], rel=1e-6)
    epochs = [float(r["train/loss_epoch"]) for r in rows if r.get("train/loss_epoch")]
    expected = []
    for epoch in (0, 1):
        mine = [(loss, n) for e, loss, n in record.losses if e == epoch]
        expected.append(sum(loss * n for loss, n in mine) / sum(n for _, n in mine))
    assert epochs == pytest.approx(expected, rel=1e-6)
    assert not math.isclose(expected[0], sum(loss for _, loss, _ in record.losses[:7]) / 7, rel_tol=1e-6)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_nan_guard_stops_on_any_non_finite_loss_among_finite_ones(bad: float) -> None:
    guard = StopOnNonFiniteLoss(check_every_n_steps=4)
    trainer: Any = type("T", (), {"checkpoint_callback": None, "current_epoch": 0, "global_step": 3})()
    for i, loss in enumerate([2.0, bad, 1.0]):
        guard.on_train_batch_end(trainer, None, torch.tensor(loss), None, i)  # type: ignore[arg-type]
    with pytest.raises(NonFiniteLossError):
        guard.on_train_batch_end(trainer, None, torch.tensor(3.0), None, 3)  # type: ignore[arg-type]
    # finite losses, also large fp16 ones whose fp16 sum would overflow, pass
    for i in range(8):
        guard.on_train_batch_end(trainer, None, torch.tensor(60000.0, dtype=torch.float16), None, i)  # type: ignore[arg-type]
    guard.on_train_epoch_end(trainer, None)  # type: ignore[arg-type]


def test_nan_guard_leaves_the_loss_it_sums_untouched() -> None:
    guard = StopOnNonFiniteLoss(check_every_n_steps=10)
    trainer: Any = type("T", (), {"checkpoint_callback": None, "current_epoch": 0, "global_step": 0})()
    first, second = torch.tensor(1.5), torch.tensor(2.5)
    guard.on_train_batch_end(trainer, None, first, None, 0)  # type: ignore[arg-type]
    guard.on_train_batch_end(trainer, None, second, None, 1)  # type: ignore[arg-type]
    assert (first.item(), second.item()) == (1.5, 2.5)


def test_reseed_each_batch_draws_what_seed_everything_would() -> None:
    """Every RNG a training step may use (dropout: torch; timm's Mixup: NumPy; ``random``) is in the state
    ``L.seed_everything(step_seed)`` gives it, whatever was drawn before."""
    trainer: Any = type("T", (), {"current_epoch": 2, "global_rank": 1})()
    module = torch.nn.Linear(1, 1)
    module.device = torch.device("cpu")  # type: ignore[assignment]

    def draws() -> tuple[float, float, float]:
        return torch.rand(1).item(), float(np.random.rand()), random.random()

    torch.rand(5), np.random.rand(3), random.random()  # some history
    ReseedEachBatch(seed=7).on_train_batch_start(trainer, module, None, 5)  # type: ignore[arg-type]
    ours = draws()
    L.seed_everything(hash((7, 2, 5, 1)) % 2**32, verbose=False)
    assert ours == draws()
