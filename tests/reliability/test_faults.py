"""Fault injection with real processes and real signals: kill -9, SIGTERM, NaN, full disk, bad files."""

from __future__ import annotations

import errno
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
from helpers import FAST, compose_train, make_cifar10_folder, make_image_folder, max_weight_difference, run_cli, run_ok

from mobilenet_pl.lit.checkpoint_io import AtomicCheckpointIO, CheckpointWriteError
from mobilenet_pl.train import train

# many tiny epochs on fake data: a checkpoint is written several times a second
LONG_RUN = [
    "data=fake",
    "width=0.25",
    "resolution=32",
    "logger=none",
    "data.train_size=64",
    "data.val_size=16",
    "data.test_size=16",
    "data.batch_size=16",
    "trainer.max_epochs=100000",
    "+trainer.enable_progress_bar=false",
]


def start_training(args: list[str], cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "mobilenet_pl.train", *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for(path_glob: str, cwd: Path, proc: subprocess.Popen[str], timeout: float = 120) -> Path:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = list(cwd.glob(path_glob))
        if found:
            return found[0]
        if proc.poll() is not None:
            raise AssertionError(f"training exited early: {proc.stderr.read()[-2000:] if proc.stderr else ''}")
        time.sleep(0.05)
    raise AssertionError(f"{path_glob} did not appear")


def load_weights(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


@pytest.mark.parametrize("attempt", range(3))
def test_kill_9_at_any_moment_leaves_a_loadable_last_ckpt(attempt: int, tmp_path: Path) -> None:
    proc = start_training(LONG_RUN, tmp_path)
    try:
        last = wait_for("outputs/*/*/checkpoints/last.ckpt", tmp_path, proc)
        time.sleep(random.Random(attempt).uniform(0.0, 2.0))  # somewhere in later epochs, maybe mid-write
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    weights = load_weights(last)
    assert all(torch.isfinite(v).all() for v in weights.values() if v.is_floating_point())


def test_sigterm_saves_a_checkpoint_mid_epoch_and_exits_143(tmp_path: Path) -> None:
    args = [*LONG_RUN, "data.train_size=960", "trainer.max_epochs=3"]  # 60 steps per epoch
    proc = start_training(args, tmp_path)
    try:
        last = wait_for("outputs/*/*/checkpoints/last.ckpt", tmp_path, proc, timeout=300)
        steps_after_epoch0 = torch.load(last, weights_only=True)["global_step"]
        time.sleep(0.5)
    except BaseException:
        proc.kill()
        raise
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err[-2000:]  # saved, but not finished
    assert "received SIGTERM during train: saved" in out
    saved = torch.load(last, weights_only=True)
    assert saved["global_step"] > steps_after_epoch0  # this epoch's progress, not only the last epoch end


class SigtermAt(L.Callback):
    """Sends this process a real SIGTERM after batch ``batch`` of ``stage`` in epoch ``epoch``."""

    def __init__(self, stage: str, epoch: int = 0, batch: int = 0) -> None:
        self.stage, self.epoch, self.batch = stage, epoch, batch

    def _maybe(self, trainer: L.Trainer, stage: str, batch_idx: int) -> None:
        if (stage, trainer.current_epoch, batch_idx) == (self.stage, self.epoch, self.batch):
            os.kill(os.getpid(), signal.SIGTERM)

    def on_validation_batch_end(self, trainer: L.Trainer, *args: Any, **kwargs: Any) -> None:
        if not trainer.sanity_checking:
            self._maybe(trainer, "validate", args[3] if len(args) > 3 else kwargs["batch_idx"])

    def on_test_batch_end(self, trainer: L.Trainer, *args: Any, **kwargs: Any) -> None:
        self._maybe(trainer, "test", args[3] if len(args) > 3 else kwargs["batch_idx"])

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any, **kwargs: Any) -> None:
        self._maybe(trainer, "train", args[3] if len(args) > 3 else kwargs["batch_idx"])


# 4 training steps and 4 validation batches per epoch, 4 test batches
THREE_EPOCHS = [
    *(arg for arg in LONG_RUN if not arg.startswith("trainer.max_epochs")),
    "data.val_size=64",
    "data.test_size=64",
]
SIGTERM_AT = "+callbacks.sigterm_at._target_=test_faults.SigtermAt"


def test_sigterm_during_validation_saves_the_epoch_and_resumes(
    run_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    at = ["+callbacks.sigterm_at.stage=validate", "+callbacks.sigterm_at.epoch=1"]
    cfg = compose_train([*THREE_EPOCHS, "trainer.max_epochs=3", SIGTERM_AT, *at], run_dir)
    with pytest.raises(SystemExit) as stopped:
        train(cfg, run_dir)
    assert stopped.value.code == 128 + signal.SIGTERM  # not 0: the run did not finish
    last = run_dir / "checkpoints" / "last.ckpt"
    assert f"received SIGTERM during validate: saved {last}" in capsys.readouterr().out
    assert torch.load(last, weights_only=True)["global_step"] == 8  # epoch 1's training is kept
    assert not (run_dir / "results.json").exists()
    # a restart in the same run dir (auto_resume) finishes the run: 3 epochs, 12 steps, results written
    resumed = train(compose_train([*THREE_EPOCHS, "trainer.max_epochs=3"], run_dir), run_dir)
    assert torch.load(last, weights_only=True)["global_step"] == 12
    assert resumed["epochs"] == 3 and (run_dir / "results.json").is_file()


def test_sigterm_during_test_is_a_clear_message_and_a_failed_exit(
    run_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = compose_train(
        [
            *THREE_EPOCHS,
            "trainer.max_epochs=1",
            SIGTERM_AT,
            "+callbacks.sigterm_at.stage=test",
            "+callbacks.sigterm_at.epoch=1",
        ],
        run_dir,
    )
    with pytest.raises(SystemExit) as stopped:
        train(cfg, run_dir)
    assert stopped.value.code == 128 + signal.SIGTERM
    assert "received SIGTERM during test: stopped, no results written; evaluate with" in capsys.readouterr().err
    assert not (run_dir / "results.json").exists()


def test_nan_loss_stops_with_a_clear_message_and_no_nan_checkpoint(tmp_path: Path) -> None:
    proc = run_cli("mobilenet_pl.train", *LONG_RUN, "trainer.max_epochs=20", "optimizer.lr=1e30", cwd=tmp_path)
    assert proc.returncode == 2
    assert "error: training loss became NaN/inf in epoch" in proc.stderr
    assert "Traceback" not in proc.stderr
    for last in tmp_path.glob("outputs/*/*/checkpoints/*.ckpt"):
        weights = load_weights(last)
        assert all(torch.isfinite(v).all() for v in weights.values() if v.is_floating_point()), last


def test_resume_continues_the_same_schedule(tmp_path: Path) -> None:
    common = [
        "width=0.25",
        "logger=none",
        "+trainer.limit_train_batches=3",
        "+trainer.limit_val_batches=1",
        "test=false",
        "+trainer.enable_progress_bar=false",
        "trainer.max_epochs=3",
    ]
    first_dir, resumed_dir = tmp_path / "first", tmp_path / "resumed"
    first_dir.mkdir()
    resumed_dir.mkdir()
    first = train(
        compose_train(
            [*common, "+callbacks.stop._target_=helpers.StopAfterEpoch", "+callbacks.stop.epoch=0"], first_dir
        ),
        first_dir,
    )
    resumed = train(compose_train([*common, f"ckpt_path={first['last_checkpoint']}"], resumed_dir), resumed_dir)
    before, after = (torch.load(r["last_checkpoint"], weights_only=True) for r in (first, resumed))
    assert (before["epoch"], before["global_step"]) == (0, 3)
    assert (after["epoch"], after["global_step"]) == (2, 9)  # continued, not restarted
    assert after["lr_schedulers"][0]["last_epoch"] == 9
    assert len(after["optimizer_states"][0]["state"]) == len(before["optimizer_states"][0]["state"])


@pytest.mark.slow
@pytest.mark.parametrize(
    ("data", "interruption"),
    [
        ("digits", "epoch end"),
        ("digits", "SIGTERM mid-epoch"),
        ("imagefolder", "epoch end"),
        ("fake", "epoch end"),
        ("cifar10", "epoch end"),
    ],
)
def test_resume_gives_identical_weights_to_an_uninterrupted_run(
    data: str, interruption: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # every data option: digits' random affine augmentation, dropout and shuffling all draw from the RNGs; the
    # image folder adds random-resized crops and flips drawn in 2 persistent DataLoader workers; CIFAR-10 (a
    # generated folder in torchvision's layout) its crop-with-padding and flip
    common = [
        "width=0.25",
        "logger=none",
        "trainer.deterministic=true",
        "trainer.max_epochs=3",
        "+trainer.limit_train_batches=3",
        "+trainer.limit_val_batches=1",
        "test=false",
        "+trainer.enable_progress_bar=false",
    ]
    if interruption != "epoch end":  # whole epochs: the resumed one must run exactly its remaining batches
        common = [arg for arg in common if "limit_train_batches" not in arg and "max_epochs" not in arg]
        common.append("trainer.max_epochs=2")
    if data == "imagefolder":
        root = make_image_folder(tmp_path / "images", classes=3, per_class=8)
        common += ["data=imagefolder", f"data.root={root}", "data.num_workers=2", "data.batch_size=4", "resolution=32"]
    elif data == "fake":
        common += ["data=fake", "data.batch_size=8", "data.val_size=8"]
    elif data == "cifar10":
        import torchvision.datasets.cifar as tv_cifar

        # same files and layout as torchvision's download, other checksums
        monkeypatch.setattr(tv_cifar.CIFAR10, "_check_integrity", lambda self: True)
        monkeypatch.setattr(tv_cifar, "check_integrity", lambda *args, **kwargs: True)
        root = make_cifar10_folder(tmp_path / "cifar", train_per_batch=8)
        common += ["data=cifar10", f"data.root={root}", "data.download=false", "data.batch_size=4"]
    straight_dir, first_dir, resumed_dir = (tmp_path / name for name in ("straight", "first", "resumed"))
    for path in (straight_dir, first_dir, resumed_dir):
        path.mkdir()
    straight = train(compose_train(common, straight_dir), straight_dir)
    # the same run, interrupted, then resumed from last.ckpt in another run dir
    if interruption == "epoch end":
        stop = ["+callbacks.stop._target_=helpers.StopAfterEpoch", "+callbacks.stop.epoch=0"]
        last = Path(train(compose_train([*common, *stop], first_dir), first_dir)["last_checkpoint"])
    else:  # a real SIGTERM after the 6th of 16 batches of epoch 1: last.ckpt is mid-epoch
        at = [
            SIGTERM_AT,
            "+callbacks.sigterm_at.stage=train",
            "+callbacks.sigterm_at.epoch=1",
            "+callbacks.sigterm_at.batch=5",
        ]
        with pytest.raises(SystemExit):
            train(compose_train([*common, *at], first_dir), first_dir)
        last = first_dir / "checkpoints" / "last.ckpt"
        assert torch.load(last, weights_only=True)["global_step"] == 16 + 6
    resumed = train(compose_train([*common, f"ckpt_path={last}"], resumed_dir), resumed_dir)
    a, b = load_weights(Path(straight["last_checkpoint"])), load_weights(Path(resumed["last_checkpoint"]))
    difference = max_weight_difference(a, b)
    print(f"{data}, {interruption}: max abs weight difference after resume {difference:.3g}")
    assert difference <= 1e-6
    assert max_weight_difference(a, load_weights(last)) > 1e-3  # the interrupted run had not got there yet


def test_failed_checkpoint_write_reports_and_keeps_the_previous_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    io = AtomicCheckpointIO()
    path = tmp_path / "last.ckpt"
    io.save_checkpoint({"state_dict": {"w": torch.ones(3)}, "epoch": 1}, path)

    def disk_full(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(
        CheckpointWriteError,
        match=r"could not write checkpoint .*last.ckpt.*No space left on device.*previous checkpoint there is intact",
    ):
        io.save_checkpoint({"state_dict": {"w": torch.zeros(3)}, "epoch": 2}, path)
    monkeypatch.undo()
    kept = torch.load(path, weights_only=True)
    assert kept["epoch"] == 1 and torch.equal(kept["state_dict"]["w"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]  # no temporary file left behind


# Write failures injected in a real training process after its first checkpoint writes (patched in-process: this
# machine runs tests as root, which no folder permission stops).
FULL_DISK = """
import errno, torch
real, calls = torch.save, []
def save(*a, **k):
    calls.append(1)
    if len(calls) > 2: raise OSError(errno.ENOSPC, 'No space left on device')
    return real(*a, **k)
torch.save = save
"""
# a read-only checkpoints folder: opening a new file there and removing one both fail, as for a non-root user
READ_ONLY_CHECKPOINTS = """
import errno, pathlib
real_open, real_unlink, opened = pathlib.Path.open, pathlib.Path.unlink, []
def denied(path):
    return PermissionError(errno.EACCES, 'Permission denied', str(path))
def open_(self, mode='r', *a, **k):
    if self.parent.name == 'checkpoints' and 'w' in mode:
        opened.append(1)
        if len(opened) > 2: raise denied(self)
    return real_open(self, mode, *a, **k)
def unlink(self, *a, **k):
    if self.parent.name == 'checkpoints' and len(opened) > 2: raise denied(self)
    return real_unlink(self, *a, **k)
pathlib.Path.open, pathlib.Path.unlink = open_, unlink
"""


@pytest.mark.parametrize(
    ("failure", "reason"),
    [(FULL_DISK, "No space left"), (READ_ONLY_CHECKPOINTS, "Permission denied")],
    ids=["disk-full", "read-only-checkpoints-dir"],
)
def test_checkpoint_write_failure_during_training_is_one_clear_line(failure: str, reason: str, tmp_path: Path) -> None:
    script = tmp_path / "fail_writes.py"
    script.write_text(
        failure
        + "import sys\nsys.argv = ['mobilenet_pl.train', *sys.argv[1:]]\nfrom mobilenet_pl.train import main\nmain()\n"
    )
    proc = subprocess.run(
        [sys.executable, str(script), *LONG_RUN, "trainer.max_epochs=5"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and errors[0].startswith("error: could not write checkpoint"), proc.stderr[-2000:]
    assert reason in errors[0] and "previous checkpoint there is intact" in errors[0]
    for ckpt in tmp_path.glob("outputs/*/*/checkpoints/*.ckpt"):
        load_weights(ckpt)  # what is there still loads


class Payload:  # any class: pickling it stores code references that weights_only refuses
    pass


@pytest.mark.parametrize("command", ["mobilenet_pl.train", "mobilenet_pl.eval"])
def test_checkpoint_with_pickled_objects_is_refused(command: str, tmp_path: Path) -> None:
    bad = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "payload": Payload()}, bad)
    proc = run_cli(
        command, f"ckpt_path={bad}", "logger=none" if command.endswith("train") else "split=test", cwd=tmp_path
    )
    assert proc.returncode == 2
    assert "not a loadable tensor-only checkpoint, refused for safety" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_truncated_checkpoint_is_refused(tmp_path: Path) -> None:
    good = tmp_path / "good.ckpt"
    torch.save({"state_dict": {"w": torch.ones(1000)}}, good)
    (tmp_path / "cut.ckpt").write_bytes(good.read_bytes()[:300])
    proc = run_cli("mobilenet_pl.train", f"ckpt_path={tmp_path / 'cut.ckpt'}", "logger=none", cwd=tmp_path)
    assert proc.returncode == 2 and "is not allowed: the file is truncated or corrupt" in proc.stderr


def test_wandb_unreachable_training_goes_on_and_logs_locally(tmp_path: Path) -> None:
    env = {**os.environ, "WANDB_API_KEY": "a" * 40, "WANDB_BASE_URL": "http://127.0.0.1:9", "WANDB_INIT_TIMEOUT": "5"}
    env.pop("WANDB_MODE", None)
    args = ["data=fake", "width=0.25", "logger=wandb", "logger.mode=online", "trainer.log_every_n_steps=1", *FAST]
    proc = subprocess.run(
        [sys.executable, "-m", "mobilenet_pl.train", *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "logging offline instead" in proc.stdout + proc.stderr
    results = json.loads(next(tmp_path.glob("outputs/*/*/results.json")).read_text())
    assert results["wandb_sync"].startswith("wandb sync ")
    records = next(tmp_path.glob("outputs/*/*/wandb/offline-run-*/run-*.wandb")).read_bytes()
    assert b"val/acc1" in records and b"test/acc1" in records  # kept locally for a later `wandb sync`


def test_temporary_files_of_killed_writers_are_removed_on_the_next_write(tmp_path: Path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host = socket.gethostname()
    stale = [tmp_path / f".last.ckpt.tmp-{host}-{dead.pid}", tmp_path / f".epoch=3.ckpt.tmp-{dead.pid}"]
    kept = [tmp_path / f".last.ckpt.tmp-{host}-{os.getppid()}", tmp_path / f".last.ckpt.tmp-other-node-{dead.pid}"]
    for path in stale + kept:
        path.write_bytes(b"half a checkpoint")
    AtomicCheckpointIO().save_checkpoint({"state_dict": {"w": torch.ones(2)}}, tmp_path / "last.ckpt")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["last.ckpt", *(p.name for p in kept)])


@pytest.mark.slow
def test_kill_9_mid_write_leaves_no_temporary_file_after_a_restart(tmp_path: Path) -> None:
    proc = start_training(LONG_RUN, tmp_path)
    try:
        last = wait_for("outputs/*/*/checkpoints/last.ckpt", tmp_path, proc)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # freeze the writer while its temporary file exists, then kill it
            if list(last.parent.glob(".*.tmp-*")):
                proc.send_signal(signal.SIGSTOP)
                if list(last.parent.glob(".*.tmp-*")):
                    break
                proc.send_signal(signal.SIGCONT)
            time.sleep(0.001)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    run_dir = last.parent.parent
    overrides = [line.strip()[2:] for line in (run_dir / ".hydra" / "overrides.yaml").read_text().splitlines()]
    assert list(last.parent.glob(".*.tmp-*")), "no write was caught in progress within 2 minutes"
    # a restart in the same run dir (auto_resume) writes its next checkpoint there and sweeps the leftovers
    restart = [*(o for o in overrides if not o.startswith("trainer.max_epochs")), f"hydra.run.dir={run_dir}"]
    epoch = torch.load(last, weights_only=True)["epoch"]
    run_ok("mobilenet_pl.train", *restart, f"trainer.max_epochs={epoch + 2}", "test=false", cwd=tmp_path)
    assert not list(last.parent.glob(".*.tmp-*"))
