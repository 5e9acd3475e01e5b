"""A run prints what the user can act on: no third-party tips, deprecations, FLOP-less model summaries, and in
a log file no progress-bar redraws (control sequences), only a plain line per epoch."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
from pathlib import Path

from helpers import FAST

from mobilenet_pl.app.runner import quiet_third_party

NOISE = (
    "anonymous setting has no effect",  # W&B, for an argument Lightning passes
    "litlogger",  # Lightning's ad
    "LeafSpec",  # a deprecation inside Lightning
    "FLOPs",  # Lightning's model summary (its FLOPs column reads 0)
    "No CUDA runtime is found",  # torch.utils.cpp_extension, imported by the quantize stack
)
# a live display redrawing itself: carriage return, cursor up, erase line (colour, which FORCE_COLOR asks for, is fine)
REDRAW = re.compile(r"\r|\x1b\[\d*[AK]|\x1b\[\?25[lh]")


def test_a_short_run_logged_to_a_file_prints_no_noise(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}  # show every warning, as a user sees
    env.update(WANDB_MODE="offline", FORCE_COLOR="1")  # forced colour: Rich would draw its live bar into the file
    fast = [arg for arg in FAST if "enable_progress_bar" not in arg]
    proc = subprocess.run(
        [sys.executable, "-m", "mobilenet_pl.train", "logger=wandb", "logger.mode=offline", *fast],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert [noise for noise in NOISE if noise in out] == []
    assert REDRAW.findall(out) == []
    assert out.count("`Trainer.fit` stopped") == 1 and "INFO: " not in out  # Lightning's lines once, as they are
    assert "epoch 1/1  val loss " in proc.stdout  # the bar's place: one plain line per epoch
    assert "near chance" in proc.stdout or "test         top-1" in proc.stdout


def test_quiet_drops_only_the_listed_lines_and_only_inside() -> None:
    cpp = logging.getLogger("torch.utils.cpp_extension")  # torch's loggers do not propagate: listen on it
    seen: list[str] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: seen.append(record.getMessage())  # type: ignore[method-assign]
    cpp.addHandler(handler)
    try:
        with quiet_third_party():
            cpp.warning("No CUDA runtime is found, using CUDA_HOME='%s'", "/usr/local/cuda")
            cpp.warning("something a user can act on")
        assert seen == ["something a user can act on"]
        cpp.warning("No CUDA runtime is found, using CUDA_HOME='%s'", "/usr/local/cuda")
        assert len(seen) == 2  # outside a command, nothing is filtered
    finally:
        cpp.removeHandler(handler)


def test_wandb_logger_passes_no_anonymous_setting(tmp_path: Path) -> None:
    """Fails when Lightning renames its private ``_wandb_init``: then W&B's warning is back (see tracking.py)."""
    from mobilenet_pl.app.tracking import TrackedWandbLogger

    logger = TrackedWandbLogger(run_mode="disabled", save_dir=str(tmp_path))
    assert "project" in logger._wandb_init and "anonymous" not in logger._wandb_init
