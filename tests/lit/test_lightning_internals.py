"""Each private Lightning access of ``mobilenet_pl.lit.lightning_internals`` against the installed Lightning.

A release that moves one fails here, naming the attribute, instead of silently changing what a run does
(an uncapped bar, a loss logged every step, a resume at the wrong batch, a report cut short by a SIGKILL).
"""

from __future__ import annotations

import subprocess
from typing import Any

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import RichProgressBar
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from mobilenet_pl.lit import lightning_internals
from mobilenet_pl.lit.lightning_internals import LightningInternalsError


def _moved(what: str) -> str:
    return f"lightning {L.__version__} no longer has {what} as mobilenet_pl.lit.lightning_internals expects"


class Tiny(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(2, 2)
        self.seen: list[tuple[int, bool, tuple[int, int]]] = []

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        trainer = self.trainer
        update = lightning_internals.should_update_logs(trainer)
        self.seen.append((trainer.global_step, update, lightning_internals.train_position(trainer)))
        return self.layer(batch[0]).sum()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _fit(module: L.LightningModule, callbacks: list[L.Callback] | None = None, **kwargs: Any) -> L.Trainer:
    data = DataLoader(TensorDataset(torch.randn(12, 2)), batch_size=2)  # 6 batches an epoch
    kwargs.setdefault("max_epochs", 2)
    trainer = L.Trainer(
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=False,
        callbacks=callbacks or [],
        accelerator="cpu",
        **kwargs,
    )
    trainer.fit(module, data)
    return trainer


def test_rich_progress_bar_rate_is_set_through_its_private_attribute() -> None:
    bar = RichProgressBar()  # refresh_rate=100
    assert isinstance(getattr(bar, "_refresh_rate", None), int), _moved("RichProgressBar._refresh_rate")
    lightning_internals.cap_refresh_rate(bar, 7)
    assert bar.refresh_rate == 7, _moved("RichProgressBar._refresh_rate behind RichProgressBar.refresh_rate")


def test_should_update_logs_follows_log_every_n_steps() -> None:
    trainer = L.Trainer(logger=False, accelerator="cpu")
    connector = getattr(trainer, "_logger_connector", None)
    assert connector is not None, _moved("Trainer._logger_connector")
    assert isinstance(getattr(type(connector), "should_update_logs", None), property), _moved(
        "Trainer._logger_connector.should_update_logs"
    )
    module = Tiny()
    _fit(module, log_every_n_steps=3)
    # Lightning writes the loggers after steps 3, 6, 9 and 12 (counted from 1)
    assert [update for _, update, _ in module.seen] == [(step + 1) % 3 == 0 for step, _, _ in module.seen], _moved(
        "Trainer._logger_connector.should_update_logs with the meaning 'the loggers are written after this step'"
    )


def test_train_position_counts_completed_batches_and_processed_epochs() -> None:
    module = Tiny()
    _fit(module)
    positions = [position for _, _, position in module.seen]
    # during batch i of epoch e: e epochs processed, i batches completed
    assert positions == [(epoch, batch) for epoch in range(2) for batch in range(6)], _moved(
        "Trainer.fit_loop.epoch_loop.batch_progress.current.completed / fit_loop.epoch_progress.current.processed"
    )

    class AtEpochEnd(L.Callback):
        def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
            self.position = lightning_internals.train_position(trainer), trainer.is_last_batch

    end = AtEpochEnd()
    _fit(Tiny(), [end], max_epochs=1)
    # an ended epoch is processed (where checkpoints are written), and its last batch done
    assert end.position == ((1, 6), True), _moved("the fit loop's epoch_progress.current.processed at an epoch's end")


def test_the_launchers_process_list_is_the_one_its_watcher_holds(monkeypatch: pytest.MonkeyPatch) -> None:
    """Lightning's watcher SIGKILLs the launching process when a rank it holds is gone; emptying the launcher's
    ``procs`` takes them from it only while both are the same list."""
    from lightning.fabric.plugins.environments import LightningEnvironment
    from lightning.pytorch.strategies.launchers import subprocess_script

    launcher = subprocess_script._SubprocessScriptLauncher(LightningEnvironment(), num_processes=2, num_nodes=1)
    assert isinstance(getattr(launcher, "procs", None), list), _moved("_SubprocessScriptLauncher.procs")
    watched: list[Any] = []
    child = subprocess.Popen(["true"])
    child.wait()
    monkeypatch.setattr(launcher, "_call_children_scripts", lambda: launcher.procs.append(child))
    monkeypatch.setattr(subprocess_script, "_launch_process_observer", watched.append)
    launcher.launch(lambda: None)
    assert watched and watched[0] is launcher.procs, _moved("the launcher's procs list handed to its process watcher")

    strategy = type("Strategy", (), {"launcher": launcher})()
    trainer = type("Trainer", (), {"strategy": strategy})()
    assert lightning_internals.detach_launched_processes(trainer) == [child]  # type: ignore[arg-type]
    assert watched[0] == []  # the watcher sees "all done"


def test_a_moved_attribute_is_an_error_naming_it() -> None:
    class NoRate:
        refresh_rate = 100

    with pytest.raises(LightningInternalsError, match=r"no RichProgressBar\._refresh_rate .*lightning_internals"):
        lightning_internals.cap_refresh_rate(NoRate(), 10)
    with pytest.raises(LightningInternalsError, match=r"no Trainer\._logger_connector\.should_update_logs"):
        lightning_internals.should_update_logs(object())  # type: ignore[arg-type]
    loop = type("Loop", (), {"epoch_progress": None, "epoch_loop": None})()
    with pytest.raises(LightningInternalsError, match=r"batch_progress\.current\.completed"):
        lightning_internals.train_position(type("T", (), {"fit_loop": loop})())  # type: ignore[arg-type]
