"""How one training job spans processes: the ranks Lightning launches on a node, processes started
separately (other nodes, SLURM tasks, torchrun), and what the survivors do when one of them dies.

- Ranks 1..N-1 of a node are started by Lightning re-running the command. Left alone, each would re-run
  Hydra (and a whole multirun, sweep included). Instead the job hands its resolved config and run dir to
  them in the environment (`ddp_job_scope`), and each trains exactly that job without Hydra.
- Processes started separately run Hydra themselves and must share one run dir (`check_shared_run_dir`);
  only the first writes the run's files.
- A rank that dies surfaces in the others as a failed collective: one `RankLostError` line naming it and
  the checkpoint to resume from (`stop_on_lost_rank`), within the process-group timeout at worst.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from mobilenet_pl._checks import first_line
from mobilenet_pl.app.errors import EXIT_BAD_INPUT, ConfigError, RankLostError, is_collective_failure

if TYPE_CHECKING:  # Lightning is imported by the job, after its config was checked
    import lightning as L

# Set by a DDP job for the ranks Lightning launches: the job's run dir and its config (YAML). The
# environment, not a file in the run dir: nodes sharing the dir never race on it and a kill leaves nothing.
DDP_JOB_ENV = "MOBILENET_PL_DDP_JOB"
DDP_CONFIG_ENV = "MOBILENET_PL_DDP_CONFIG"
# The first process's checks of the evaluation images (lit/data/eval_checks.py), so that the ranks it launches
# do not decode every val/test image again; only up to this size (a folder full of broken files is rechecked).
EVAL_CHECKS_ENV = "MOBILENET_PL_EVAL_CHECKS"
EVAL_CHECKS_MAX_BYTES = 32 * 1024  # Windows: at most 32,767 characters per variable
# What Lightning's launcher leaves in os.environ; a later job of the same multirun must start clean.
_LAUNCHER_ENV = (
    "MASTER_ADDR",
    "MASTER_PORT",
    "NODE_RANK",
    "LOCAL_RANK",
    "WORLD_SIZE",
    DDP_JOB_ENV,
    DDP_CONFIG_ENV,
    EVAL_CHECKS_ENV,
)


@contextlib.contextmanager
def ddp_job_scope(cfg: DictConfig, run_dir: Path) -> Iterator[None]:
    """Publish this job to the DDP ranks Lightning will launch, and leave no launcher state behind."""
    before = {key: os.environ.get(key) for key in _LAUNCHER_ENV}
    os.environ[DDP_JOB_ENV] = str(run_dir)
    os.environ[DDP_CONFIG_ENV] = OmegaConf.to_yaml(cfg)
    try:
        yield
    finally:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()  # the next job of a multirun starts its own group
        for key, value in before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def hand_on_eval_checks() -> None:
    """Publish this process's evaluation-image checks to the ranks Lightning is about to launch (call after the
    data's ``setup``, before ``fit``)."""
    from mobilenet_pl.lit.data.eval_checks import checked_folders

    text = checked_folders()
    if len(text) <= EVAL_CHECKS_MAX_BYTES:
        os.environ[EVAL_CHECKS_ENV] = text
    else:
        os.environ.pop(EVAL_CHECKS_ENV, None)


def take_eval_checks() -> None:
    """In a launched rank: take the first process's evaluation-image checks (before the data's ``setup``)."""
    from mobilenet_pl.lit.data.eval_checks import remember_checked_folders

    remember_checked_folders(os.environ.get(EVAL_CHECKS_ENV, ""))


def launched_as_extra_process() -> bool:
    """True in every process of a job but the first: another node (``NODE_RANK``/``GROUP_RANK``/
    ``SLURM_NODEID``) or another task of a SLURM or torchrun launch (``SLURM_PROCID``/``RANK``)."""
    keys = ("NODE_RANK", "GROUP_RANK", "SLURM_NODEID", "SLURM_PROCID", "RANK", "LOCAL_RANK")
    return any(os.environ.get(key, "0").isdigit() and int(os.environ.get(key, "0")) > 0 for key in keys)


def launched_by_lightning() -> bool:
    """This process is a rank Lightning's launcher started (``main`` trains it without Hydra)."""
    return bool(os.environ.get(DDP_JOB_ENV)) and int(os.environ.get("LOCAL_RANK", "0")) > 0


# the process that started this one: for a rank Lightning launched, its node's rank 0
_PARENT_PID = os.getppid()


def _lost_rank(trainer: L.Trainer, children: list[subprocess.Popen[bytes]]) -> str | None:
    """The rank that died, as "rank N (pid P, killed by SIGKILL)", where this process can tell: the
    node's first process watches the ranks it launched; those ranks see their launcher go."""
    launched = launched_by_lightning()
    first = trainer.node_rank * trainer.num_devices  # this node's first global rank
    deadline = time.monotonic() + 1.0  # a peer's sockets close a moment before the system reports it gone
    while launched or children:
        if launched and os.getppid() != _PARENT_PID:  # orphaned: the launching process died
            return f"rank {first} (pid {_PARENT_PID}, this node's first process)"
        for local_rank, proc in enumerate(children, start=1):
            code = proc.poll()
            if code:
                how = f"killed by {signal.Signals(-code).name}" if code < 0 else f"exit status {code}"
                return f"rank {first + local_rank} (pid {proc.pid}, {how})"
        if time.monotonic() > deadline:
            break
        time.sleep(0.05)
    return None


def lost_rank_message(
    trainer: L.Trainer, run_dir: Path, err: BaseException, children: list[subprocess.Popen[bytes]]
) -> str:
    """One line: which rank stopped where, which rank was lost (when this process can tell), the
    communication error, the checkpoint to resume from and how."""
    lost = (
        _lost_rank(trainer, children)
        or (f"rank {1 - trainer.global_rank}" if trainer.world_size == 2 else "another rank")
        + " (it died, hung or its node was lost)"
    )
    detail = re.sub(r"^\[[^\]]*\]\s*", "", first_line(err))  # drop gloo's source location
    detail = detail.split(". This is typically")[0]
    dirpath = getattr(trainer.checkpoint_callback, "dirpath", None) or str(run_dir / "checkpoints")
    last = Path(dirpath, "last.ckpt")
    resume = (
        f"the last checkpoint is {last}: run the same command again (same hydra.run.dir) to resume from it"
        if last.is_file()
        else "no checkpoint was written yet: run the same command again to start over"
    )
    return (
        f"rank {trainer.global_rank} stopped in epoch {trainer.current_epoch} (step {trainer.global_step}): "
        f"lost {lost} [{detail}]; {resume}"
    )


@contextlib.contextmanager
def stop_on_lost_rank(trainer: L.Trainer, run_dir: Path) -> Iterator[None]:
    """A rank that dies (kill -9, out of memory, a lost node) surfaces in the others as a failed collective:
    at once when its sockets close, else after the process-group timeout (conf/trainer/ddp.yaml). Report
    it as one line (`RankLostError`) instead of a traceback per rank."""
    try:
        yield
    except Exception as err:
        if trainer.world_size < 2 or not is_collective_failure(err):
            raise
        from mobilenet_pl.lit.lightning_internals import detach_launched_processes

        children = detach_launched_processes(trainer)  # before Lightning's watcher kills us
        message = lost_rank_message(trainer, run_dir, err, children)
        for proc in children:  # they cannot go on without this rank; they leave the report to it
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
        if launched_by_lightning():
            orphaned = os.getppid() != _PARENT_PID
            # one report per node: its first process, or local rank 1 when the first process is the one lost
            if not orphaned or os.environ.get("LOCAL_RANK") != "1":
                raise SystemExit(EXIT_BAD_INPUT) from None
        raise RankLostError(message) from err


def _started_separately(cfg: DictConfig) -> bool:
    """The job's processes are started one by one (nodes by hand, SLURM tasks, torchrun), each running Hydra."""
    slurm_tasks = int(os.environ.get("SLURM_NTASKS", "1")) > 1 and os.environ.get("SLURM_JOB_NAME") not in (
        "bash",
        "interactive",
    )  # Lightning's own test for tasks started by srun
    num_nodes = cfg.trainer.get("num_nodes")  # a bad value is validate()'s to report
    return (isinstance(num_nodes, int) and num_nodes > 1) or slurm_tasks or "TORCHELASTIC_RUN_ID" in os.environ


def check_shared_run_dir(cfg: DictConfig, hydra_cfg: Any) -> None:
    """Processes started separately must agree on the run dir: the default one is named after the second
    each process started in, so two nodes could write (and auto-resume from) different dirs."""
    if hydra_cfg.mode == RunMode.MULTIRUN or not _started_separately(cfg):
        return  # a sweep's dir is fixed once, by the process that launches its jobs
    run = OmegaConf.to_container(hydra_cfg.run, resolve=False)  # the dir as written, before ${now:...} resolves
    run_dir = str(run.get("dir", "")) if isinstance(run, dict) else ""
    if "${now:" in run_dir:
        raise ConfigError(
            f"hydra.run.dir={run_dir!r} is not allowed for a job started on several nodes or as separate tasks: "
            "each process would name it after its own start time; give every process the same "
            "hydra.run.dir=<shared path> (e.g. outputs/job-$SLURM_JOB_ID)"
        )
