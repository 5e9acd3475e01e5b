"""Ctrl-C keeps the work: SIGINT behaves as SIGTERM does (tests/reliability/test_faults.py): last.ckpt saved
after the current batch, one line with the command that resumes, exit status 130 (128 + SIGINT), and no
temporary file, also when SIGINT arrives while a checkpoint is being saved."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
from helpers import compose_train
from test_faults import LONG_RUN, start_training, wait_for

from mobilenet_pl.train import train

# 4 training steps and 4 validation batches per epoch
EPOCHS = [
    *(arg for arg in LONG_RUN if not arg.startswith("trainer.max_epochs")),
    "data.val_size=64",
    "data.test_size=64",
    "trainer.max_epochs=3",
]


class SigintAt(L.Callback):
    """Sends this process a real SIGINT (what Ctrl-C sends) after training batch ``batch`` of epoch ``epoch``,
    or (``in_save``) while Lightning is saving a checkpoint."""

    def __init__(self, epoch: int = 0, batch: int = 0, in_save: bool = False, stage: str = "train") -> None:
        self.epoch, self.batch, self.in_save, self.stage = epoch, batch, in_save, stage

    def on_validation_batch_end(self, trainer: L.Trainer, *args: Any, **kwargs: Any) -> None:
        batch_idx = args[3] if len(args) > 3 else kwargs["batch_idx"]
        at = (trainer.current_epoch, batch_idx) == (self.epoch, self.batch)
        if self.stage == "validate" and not trainer.sanity_checking and at:
            os.kill(os.getpid(), signal.SIGINT)

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any, **kwargs: Any) -> None:
        batch_idx = args[3] if len(args) > 3 else kwargs["batch_idx"]
        if (
            self.stage == "train"
            and not self.in_save
            and (trainer.current_epoch, batch_idx) == (self.epoch, self.batch)
        ):
            os.kill(os.getpid(), signal.SIGINT)

    def on_save_checkpoint(self, trainer: L.Trainer, *args: Any) -> None:
        if self.in_save and trainer.current_epoch == self.epoch:
            self.in_save = False
            os.kill(os.getpid(), signal.SIGINT)


SIGINT_AT = "+callbacks.sigint_at._target_=test_ctrl_c.SigintAt"


@pytest.mark.parametrize("moment", ["mid-epoch", "during a checkpoint save", "during validation"])
def test_sigint_saves_like_sigterm_and_names_the_resume_command(
    moment: str, run_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    at = ["+callbacks.sigint_at.epoch=1", "+callbacks.sigint_at.batch=1"]
    if moment == "during a checkpoint save":
        at.append("+callbacks.sigint_at.in_save=true")
    if moment == "during validation":
        at.append("+callbacks.sigint_at.stage=validate")
    cfg = compose_train([*EPOCHS, SIGINT_AT, *at], run_dir)
    with pytest.raises(SystemExit) as stopped:
        train(cfg, run_dir)
    assert stopped.value.code == 128 + signal.SIGINT  # saved, but the run did not finish
    last = run_dir / "checkpoints" / "last.ckpt"
    out = capsys.readouterr().out
    stage = "validate" if moment == "during validation" else "train"
    assert f"received SIGINT during {stage}: saved {last}" in out and f"resume with ckpt_path={last}" in out, out
    saved = torch.load(last, weights_only=True)
    assert saved["global_step"] == (6 if moment == "mid-epoch" else 8)  # the batch that ran, or the whole epoch
    assert not [p for p in run_dir.rglob("*") if ".tmp" in p.name]  # no temporary file
    assert not (run_dir / "results.json").exists()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # Ctrl-C is plain again afterwards
    resumed = train(compose_train(EPOCHS, run_dir), run_dir)  # the same run dir resumes and finishes
    assert resumed["epochs"] == 3 and torch.load(last, weights_only=True)["global_step"] == 12


@pytest.mark.slow
def test_ctrl_c_in_a_real_process_saves_and_prints_the_command_that_resumes(tmp_path: Path) -> None:
    args = [*LONG_RUN, "data.train_size=960", "trainer.max_epochs=3"]  # 60 steps per epoch
    proc = start_training(args, tmp_path)
    try:
        last = wait_for("outputs/*/*/checkpoints/last.ckpt", tmp_path, proc, timeout=300)
        steps_after_epoch0 = torch.load(last, weights_only=True)["global_step"]
    except BaseException:
        proc.kill()
        raise
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGINT, err[-2000:]
    lines = [line for line in out.splitlines() if line.startswith("received SIGINT")]
    assert len(lines) == 1 and "during train: saved" in lines[0], out[-2000:]
    assert f"python -m mobilenet_pl.train {' '.join(args)} ckpt_path={last}" in lines[0], lines[0]
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err[-2000:]
    assert torch.load(last, weights_only=True)["global_step"] > steps_after_epoch0
    assert not list(last.parent.glob(".*.tmp-*"))


def test_ctrl_c_outside_a_stage_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    from mobilenet_pl.app.errors import error_boundary

    with pytest.raises(SystemExit) as stopped, error_boundary():
        raise KeyboardInterrupt  # e.g. while the data set is scanned, before training
    assert stopped.value.code == 128 + signal.SIGINT
    assert capsys.readouterr().err.strip().splitlines() == [
        "interrupted (Ctrl-C): stopped; files written before it are kept"
    ]
