"""A run's directory: one run at a time holds it, and a requeued run finds its own last.ckpt there."""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator
from pathlib import Path

from omegaconf import DictConfig

from mobilenet_pl.app.ddp_job import launched_as_extra_process
from mobilenet_pl.app.errors import ConfigError
from mobilenet_pl.app.results import RESULTS_FILE


@contextlib.contextmanager
def run_dir_lock(run_dir: Path) -> Iterator[None]:
    """Hold ``run_dir/.lock`` for the run's life: a second run started in the same dir (the same
    ``hydra.run.dir``, or the same second of the default dir) is refused instead of overwriting this one's
    last.ckpt and results.json. A lock dies with its process, so a requeued or restarted run resumes.
    Only a job's first process locks: its other nodes and SLURM tasks share the dir."""
    import fcntl

    if launched_as_extra_process():
        yield
        return

    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        handle = open(run_dir / ".lock", "a+")  # noqa: SIM115 (held until the run ends)
    except OSError as err:
        raise ConfigError(f"run dir {str(run_dir)!r} cannot be used: {err.strerror or err}") from err
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            owner = handle.read().strip() or "another process"
            raise ConfigError(
                f"hydra.run.dir={str(run_dir)!r} is in use by another run ({owner}); give this run its own "
                "hydra.run.dir, or wait for that run to end"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
        handle.flush()
        yield
    finally:
        handle.close()  # releases the lock


def resume_path(cfg: DictConfig, run_dir: Path) -> str | None:
    """``ckpt_path``, else (``auto_resume``) the job's own ``last.ckpt`` after a preemption requeue; a run dir
    that holds a finished run (its results.json) is refused rather than tested and rewritten again."""
    if cfg.ckpt_path:
        return str(cfg.ckpt_path)
    last = run_dir / "checkpoints" / "last.ckpt"
    if not (cfg.auto_resume and last.is_file()):
        return None
    if (run_dir / RESULTS_FILE).is_file():  # resuming would re-test and rewrite that run's results.json
        raise ConfigError(
            f"auto_resume=true is not allowed in hydra.run.dir={str(run_dir)!r}: it holds a finished run "
            f"({RESULTS_FILE}); give this run its own hydra.run.dir, or continue that run on purpose with "
            f"ckpt_path={str(last)!r} (and a higher trainer.max_epochs)"
        )
    return str(last)
