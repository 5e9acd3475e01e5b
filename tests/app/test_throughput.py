"""Steady-state throughput, the data-wait share, the input-bound summary line, and no per-step host sync."""

from __future__ import annotations

import io
import math
import time
from contextlib import redirect_stderr
from types import SimpleNamespace
from typing import Any

import lightning as L
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.data import DataLoader, Dataset

from mobilenet_pl.app.results import format_summary
from mobilenet_pl.lit import callbacks
from mobilenet_pl.lit.callbacks import StopOnNonFiniteLoss, Throughput
from mobilenet_pl.lit.classifier import MobileNetClassifier


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def perf_counter(self) -> float:
        return self.now


def _trainer(batches: int, world_size: int = 2) -> Any:
    # as in Lightning: during a validation inside fit, trainer.training is False and state.fn is "fit"
    return SimpleNamespace(
        num_training_batches=batches,
        world_size=world_size,
        training=False,
        sanity_checking=False,
        state=SimpleNamespace(fn="fit"),
    )


CPU_MODULE: Any = SimpleNamespace(device=torch.device("cpu"))


def _step(cb: Throughput, trainer: Any, clock: FakeClock, wait: float, compute: float, batch_size: int = 8) -> None:
    batch = (torch.zeros(batch_size, 1), torch.zeros(batch_size))
    clock.now += wait
    cb.on_train_batch_start(trainer, CPU_MODULE, batch, 0)
    clock.now += compute
    cb.on_train_batch_end(trainer, CPU_MODULE, None, batch, 0)


def test_throughput_excludes_warmup_and_validation_and_measures_data_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = FakeClock()
    monkeypatch.setattr(callbacks, "time", clock)
    cb, trainer = Throughput(), _trainer(batches=20)
    cb.on_train_epoch_start(trainer, CPU_MODULE)
    for _ in range(5):  # warm-up: max(5, 10% of 20) steps, slow on purpose
        _step(cb, trainer, clock, wait=100.0, compute=100.0)
    for _ in range(7):
        _step(cb, trainer, clock, wait=1.0, compute=3.0)
    cb.on_validation_start(trainer, CPU_MODULE)  # a mid-epoch validation: not timed
    clock.now += 50.0
    cb.on_validation_end(trainer, CPU_MODULE)
    for _ in range(8):
        _step(cb, trainer, clock, wait=1.0, compute=3.0)
    clock.now += 30.0  # the epoch's tail (scheduler, loggers) before on_train_epoch_end
    cb.on_train_epoch_end(trainer, CPU_MODULE)
    clock.now += 40.0  # checkpointing between epochs
    cb.on_train_epoch_start(trainer, CPU_MODULE)  # epoch 2 is timed from its start: no second warm-up
    for _ in range(20):
        _step(cb, trainer, clock, wait=2.0, compute=2.0)
    cb.on_train_epoch_end(trainer, CPU_MODULE)

    assert cb.warmup_steps == 5
    assert cb.images == (15 + 20) * 8 * 2  # timed batches x batch x ranks
    assert cb.seconds == pytest.approx(15 * 4.0 + 20 * 4.0)
    assert cb.images_per_sec == pytest.approx(560 / 140)
    assert cb.data_wait_fraction == pytest.approx((15 * 1.0 + 20 * 2.0) / 140)


@pytest.mark.parametrize(("batches", "expected"), [(20, 5), (200, 20), (3, 2), (1, 0), (math.inf, 5)], ids=str)
def test_warmup_is_ten_percent_of_the_first_epoch_at_least_five_and_leaves_one_step(
    batches: float, expected: int
) -> None:
    assert Throughput()._warmup(batches) == expected


def test_throughput_warmup_spans_epochs_when_the_first_is_short(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = FakeClock()
    monkeypatch.setattr(callbacks, "time", clock)
    cb, trainer = Throughput(min_warmup_steps=2), _trainer(batches=3, world_size=1)
    for _epoch in range(2):
        cb.on_train_epoch_start(trainer, CPU_MODULE)
        for _ in range(3):
            _step(cb, trainer, clock, wait=0.5, compute=1.5, batch_size=4)
        cb.on_train_epoch_end(trainer, CPU_MODULE)
    assert cb.warmup_steps == 2 and cb.images == 4 * 4
    assert cb.images_per_sec == pytest.approx(2.0) and cb.data_wait_fraction == pytest.approx(0.25)


class SlowData(Dataset):
    """A tiny data set whose items take ``delay`` seconds each: an input-bound pipeline."""

    def __init__(self, n: int, delay: float) -> None:
        self.n, self.delay = n, delay

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        time.sleep(self.delay)
        return torch.randn(8), i % 2


class Linear(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(8, 2)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        return torch.nn.functional.cross_entropy(self.fc(batch[0]), batch[1])

    def configure_optimizers(self) -> Any:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _fit(
    module: L.LightningModule, loader: Any, callbacks: list[L.Callback], val_dataloaders: Any = None, **kwargs: Any
) -> L.Trainer:
    options = {"num_sanity_val_steps": 0, "limit_val_batches": 0, **kwargs}
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=1,
        enable_checkpointing=False,
        enable_model_summary=False,
        callbacks=callbacks,
        **options,
    )
    with redirect_stderr(io.StringIO()):  # the progress bar
        trainer.fit(module, train_dataloaders=loader, val_dataloaders=val_dataloaders)
    return trainer


def test_validation_is_not_timed_in_a_real_fit() -> None:
    cb = Throughput()
    module = Linear()
    module.validation_step = lambda batch, batch_idx: None  # type: ignore[method-assign]
    val = DataLoader(SlowData(8, delay=0.1), batch_size=4)  # 0.8 s of validation per epoch
    _fit(
        module,
        DataLoader(SlowData(64, delay=0.0), batch_size=4),
        [cb],
        val_dataloaders=val,
        logger=False,
        enable_progress_bar=False,
        limit_val_batches=None,
        num_sanity_val_steps=2,
    )
    assert cb.images == (16 - 5) * 4
    assert cb.seconds < 0.4  # 11 steps of an 8->2 linear layer; the validation's 0.8 s are not in it


def test_a_slow_loader_shows_as_data_wait_in_a_real_fit() -> None:
    cb = Throughput()
    _fit(Linear(), DataLoader(SlowData(64, delay=0.01), batch_size=4), [cb], logger=False, enable_progress_bar=False)
    assert cb.warmup_steps == 5 and cb.images == (16 - 5) * 4
    # each batch sleeps 40 ms in the loader; a step of an 8->2 linear layer takes well under 10 ms
    assert cb.data_wait_fraction > 0.6
    assert 0 < cb.images_per_sec < 4 / 0.04


class ScalarReads(TorchDispatchMode, L.Callback):
    """Records every tensor read back as a Python number (``aten._local_scalar_dense``: ``.item()``,
    ``bool()``, ``float()``) from the first training batch to the end of the epoch. Reading a *new*
    device value is a host-device sync on an accelerator; reading an already-read CPU value again is
    free, so distinct storages are what counts."""

    def __init__(self) -> None:
        super().__init__()
        self.read: list[torch.Tensor] = []  # kept alive, so no storage is reused
        self.on = False

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        if self.on and func is torch.ops.aten._local_scalar_dense.default:
            ptr = args[0].untyped_storage().data_ptr()  # a detached view of a read value is no new value
            if all(t.untyped_storage().data_ptr() != ptr for t in self.read):
                self.read.append(args[0])
        return func(*args, **(kwargs or {}))

    def on_train_batch_start(self, *args: Any) -> None:
        self.on = True

    def on_train_epoch_end(self, *args: Any) -> None:
        self.on = False


def test_training_steps_read_values_back_once_per_log_interval_not_per_step(tmp_path: Any) -> None:
    """With the progress bar and a logger on, the loss reaches the host once per ``log_every_n_steps``
    (bar, logger, NaN guard), not once per step: before, ``train/loss`` was a per-step progress-bar value,
    which Lightning turns into a number after every step. SGD, because torch's Adam reads its per-parameter
    step counters, which live on the CPU on every device."""
    steps, every = 30, 10
    module = MobileNetClassifier({"name": "v2", "width": 0.25}, num_classes=4, resolution=32, optimizer={"name": "sgd"})
    data = [(torch.randn(2, 3, 32, 32), torch.randint(0, 4, (2,))) for _ in range(steps)]
    reads = ScalarReads()
    with reads:
        trainer = _fit(
            module,
            DataLoader(data, batch_size=None),
            [StopOnNonFiniteLoss(check_every_n_steps=every), Throughput(), reads],
            logger=CSVLogger(tmp_path),
            log_every_n_steps=every,
            enable_progress_bar=True,
        )
    assert trainer.global_step == steps
    intervals = steps // every
    # per interval: the bar's mean, the logger's train/loss_step, the NaN guard's flag
    assert len(reads.read) <= 3 * intervals, [t.item() for t in reads.read]
    assert "loss" in trainer.progress_bar_metrics  # the bar still shows the training loss


def test_the_progress_bar_redraws_at_most_max_per_second_not_after_every_step(monkeypatch: pytest.MonkeyPatch) -> None:
    """Lightning's default bar redraws from its own thread up to 100 times a second: once per step at steps of
    10 ms or more, 0.3-0.45 ms of CPU each. With the app's ``callbacks.progress_rate`` it redraws at most 10 times
    a second, and still redraws."""
    import threading

    rich_live = pytest.importorskip("rich.live", reason="without rich Lightning's bar is TQDM's, which limits itself")
    from hydra.utils import instantiate
    from lightning.pytorch.callbacks import RichProgressBar
    from omegaconf import OmegaConf

    from mobilenet_pl.app.config import config_dir

    redraws: list[float] = []
    refresh = rich_live.Live.refresh

    def counted(live: Any) -> None:
        if threading.current_thread() is not threading.main_thread():  # the bar's refresh thread
            redraws.append(time.perf_counter())
        refresh(live)

    monkeypatch.setattr(rich_live.Live, "refresh", counted)
    rate = instantiate(OmegaConf.load(f"{config_dir()}/callbacks/default.yaml").progress_rate)  # the app's entry
    assert rate.max_per_second == 10
    started = time.perf_counter()
    # 20 steps of at least 20 ms (the loader sleeps 5 ms per sample): ~20 redraws at Lightning's default rate
    trainer = _fit(Linear(), DataLoader(SlowData(80, delay=0.005), batch_size=4), [rate], logger=False)
    seconds = time.perf_counter() - started
    assert isinstance(trainer.progress_bar_callback, RichProgressBar)
    assert trainer.progress_bar_callback.refresh_rate == 10  # a loaded machine's slow steps could hide the count
    assert 1 <= len(redraws) <= seconds * 10 + 2, (len(redraws), seconds)


def test_summary_says_when_a_run_was_input_bound() -> None:
    results = {
        "model": "mobilenet_v2",
        "width": 1.0,
        "resolution": 224,
        "params": 3.5e6,
        "madds": 300e6,
        "metrics": {},
        "test_samples": 0,
        "checkpoint": None,
        "wall_time_s": 10.0,
        "run_dir": "runs/x",
        "train_images_per_s": 812.0,
        "train_warmup_steps": 5,
    }
    busy = format_summary({**results, "data_wait_fraction": 0.05})
    assert "812 train images/s after 5 warm-up steps, 5% of it waiting for data" in busy
    assert "input-bound" not in busy
    starved = format_summary({**results, "data_wait_fraction": 0.45})
    assert "45% of it waiting for data" in starved
    advice = next(line for line in starved.splitlines() if line.startswith("input-bound"))
    assert "data.num_workers" in advice and "data.decode_on=device" in advice
    assert "input-bound" not in format_summary(results)  # results.json of older runs: no data_wait_fraction
