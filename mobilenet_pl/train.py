"""Train a MobileNet: ``python -m mobilenet_pl.train [group=option ...] [key=value ...]``.

Reads top to bottom: validate the config -> seed -> data -> model -> trainer -> fit -> test ->
results.json. With no arguments it trains a small-input MobileNetV2 on the bundled digits in a few
minutes on a CPU. Groups: model, data, optimizer, scheduler, trainer, logger, callbacks, experiment,
hparams_search (see ``--help``, docs/training.md and docs/scaling.md).

DDP: Lightning starts ranks 1..N-1 of a node by re-running this command. Left alone, each would re-run
Hydra (and a whole multirun, sweep included). Instead, the job hands its resolved config and run dir to
them in the environment, and each extra rank trains exactly that job, without Hydra (see ``main``).
Processes started separately (other nodes, SLURM tasks) run Hydra themselves, in the same run dir, and
leave its files to the first process.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import lightning as L
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.loggers import WandbLogger
from omegaconf import DictConfig, OmegaConf

from mobilenet_pl.config import check_resume_checkpoint, validate
from mobilenet_pl.errors import EXIT_BAD_INPUT, ConfigError, RankLostError, error_boundary, is_collective_failure
from mobilenet_pl.lit.callbacks import Throughput
from mobilenet_pl.lit.checkpoint_io import AtomicCheckpointIO
from mobilenet_pl.lit.classifier import MobileNetClassifier
from mobilenet_pl.lit.data import ImageDataModule
from mobilenet_pl.models.cost import count_madds
from mobilenet_pl.results import format_summary, write_results
from mobilenet_pl.tool import run_tool
from mobilenet_pl.tracking import TrackedWandbLogger

log = logging.getLogger("mobilenet_pl")

# Set by a DDP job for the ranks Lightning launches: the job's run dir and its config (YAML). The
# environment, not a file in the run dir: nodes sharing the dir never race on it and a kill leaves nothing.
DDP_JOB_ENV = "MOBILENET_PL_DDP_JOB"
DDP_CONFIG_ENV = "MOBILENET_PL_DDP_CONFIG"
# What Lightning's launcher leaves in os.environ; a later job of the same multirun must start clean.
_LAUNCHER_ENV = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE", DDP_JOB_ENV, DDP_CONFIG_ENV)


def build_module(cfg: DictConfig, datamodule: ImageDataModule) -> MobileNetClassifier:
    """The LightningModule from plain values: the model group holds the backbone's keywords (plus
    ``pretrained``, which is not saved); width and the data-given values are added here."""
    model: dict[str, Any] = OmegaConf.to_container(cfg.model, resolve=True)  # type: ignore[assignment]
    pretrained = model.pop("pretrained", False)
    if model.get("small_input") is None:
        model["small_input"] = datamodule.small_input
    return MobileNetClassifier(
        model={**model, "width": float(cfg.width)},
        num_classes=datamodule.num_classes,
        in_chans=datamodule.in_chans,
        resolution=datamodule.resolution,
        pretrained=pretrained,
        optimizer=OmegaConf.to_container(cfg.optimizer, resolve=True),  # type: ignore[arg-type]
        scheduler=OmegaConf.to_container(cfg.scheduler, resolve=True),  # type: ignore[arg-type]
        scale_lr=cfg.recipe.scale_lr,
        label_smoothing=cfg.recipe.label_smoothing,
        mixup=cfg.recipe.mixup,
        cutmix=cfg.recipe.cutmix,
        ema_decay=cfg.recipe.ema_decay,
        channels_last=cfg.channels_last,
        compile=cfg.compile,
        class_names=list(datamodule.class_names),
    )


def build_callbacks(cfg: DictConfig, run_dir: Path, with_logger: bool) -> dict[str, L.Callback]:
    callbacks = {}
    for name, conf in (cfg.callbacks or {}).items():
        callback = instantiate(conf)
        if isinstance(callback, LearningRateMonitor) and not with_logger:
            continue  # LearningRateMonitor refuses to run without a logger
        if isinstance(callback, ModelCheckpoint) and callback.dirpath is None:
            callback.dirpath = str(run_dir / "checkpoints")  # checkpoints live in the run dir
        callbacks[name] = callback
    return callbacks


def build_logger(cfg: DictConfig, run_dir: Path, wandb_group: str | None) -> Any:
    if not cfg.logger or "_target_" not in cfg.logger:
        return None
    # a logger config with a ``group`` key (W&B) groups the jobs of one sweep
    extra = {"group": wandb_group} if wandb_group is not None and "group" in cfg.logger else {}
    logger = instantiate(cfg.logger, save_dir=str(run_dir), **extra)
    if isinstance(logger, WandbLogger):
        logger.log_hyperparams({"config": OmegaConf.to_container(cfg, resolve=True)})  # the resolved config
    return logger


def collect_results(
    cfg: DictConfig,
    module: MobileNetClassifier,
    trainer: L.Trainer,
    metrics: dict[str, float],
    started: float,
    run_dir: Path,
) -> dict[str, Any]:
    hp = module.hparams
    model = module.to_model()
    madds, _ = count_madds(model, hp["resolution"], hp["in_chans"])
    ckpt = trainer.checkpoint_callback
    best_val = getattr(ckpt, "best_model_score", None)
    if best_val is not None:
        metrics["val/acc1"] = float(best_val)
    last = Path(ckpt.dirpath or "", "last.ckpt") if ckpt is not None and ckpt.dirpath else None  # type: ignore[attr-defined]
    throughput = next((cb for cb in trainer.callbacks if isinstance(cb, Throughput)), None)  # type: ignore[attr-defined]
    return {
        "model": hp["model"]["name"],
        "width": hp["model"]["width"],
        "resolution": hp["resolution"],
        "small_input": hp["model"]["small_input"],
        "params": sum(p.numel() for p in model.parameters()),
        "madds": madds,
        "metrics": metrics,
        "test_samples": int(metrics.pop("test/samples", 0)),
        "skipped_images": trainer.datamodule.skipped_images(),  # type: ignore[attr-defined]  # every rank: DDP sum
        "checkpoint": (getattr(ckpt, "best_model_path", "") or None) if ckpt else None,
        "last_checkpoint": str(last) if last and last.is_file() else None,
        "epochs": trainer.current_epoch,
        "train_images_per_s": getattr(throughput, "images_per_sec", 0.0),
        "data_wait_fraction": getattr(throughput, "data_wait_fraction", None),
        "train_warmup_steps": getattr(throughput, "warmup_steps", None),
        "wall_time_s": time.perf_counter() - started,
        "seed": cfg.seed,
        "run_dir": str(run_dir),
    }


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


def _launched_as_extra_process() -> bool:
    """True in every process of a job but the first: another node (``NODE_RANK``/``GROUP_RANK``/
    ``SLURM_NODEID``) or another task of a SLURM or torchrun launch (``SLURM_PROCID``/``RANK``)."""
    keys = ("NODE_RANK", "GROUP_RANK", "SLURM_NODEID", "SLURM_PROCID", "RANK", "LOCAL_RANK")
    return any(os.environ.get(key, "0").isdigit() and int(os.environ.get(key, "0")) > 0 for key in keys)


@contextlib.contextmanager
def run_dir_lock(run_dir: Path) -> Iterator[None]:
    """Hold ``run_dir/.lock`` for the run's life: a second run started in the same dir (the same
    ``hydra.run.dir``, or the same second of the default dir) is refused instead of overwriting this one's
    last.ckpt and results.json. A lock dies with its process, so a requeued or restarted run resumes.
    Only a job's first process locks: its other nodes and SLURM tasks share the dir."""
    import fcntl

    if _launched_as_extra_process():
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
    """``ckpt_path``, else (``auto_resume``) the job's own ``last.ckpt`` after a preemption requeue."""
    if cfg.ckpt_path:
        return str(cfg.ckpt_path)
    last = run_dir / "checkpoints" / "last.ckpt"
    return str(last) if cfg.auto_resume and last.is_file() else None


def _launched_by_lightning() -> bool:
    """This process is a rank Lightning's launcher started (``main`` trains it without Hydra)."""
    return bool(os.environ.get(DDP_JOB_ENV)) and int(os.environ.get("LOCAL_RANK", "0")) > 0


# the process that started this one: for a rank Lightning launched, its node's rank 0
_PARENT_PID = os.getppid()


def _detach_launched_ranks(trainer: L.Trainer) -> list[subprocess.Popen[bytes]]:
    """The ranks this process launched (local ranks 1..), taken from Lightning's watcher, which would
    otherwise SIGKILL this process mid-report on seeing one gone (it polls every 5 s). Lightning 2.6 hands
    the watcher the launcher's own ``procs`` list; an empty list means "all done" to it."""
    procs = getattr(trainer.strategy.launcher, "procs", None)
    children = list(procs or [])
    if procs:
        procs.clear()
    return children


def _lost_rank(trainer: L.Trainer, children: list[subprocess.Popen[bytes]]) -> str | None:
    """The rank that died, as "rank N (pid P, killed by SIGKILL)", where this process can tell: the
    node's first process watches the ranks it launched; those ranks see their launcher go."""
    launched = _launched_by_lightning()
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
    detail = re.sub(r"^\[[^\]]*\]\s*", "", str(err).strip().splitlines()[0])  # drop gloo's source location
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
        children = _detach_launched_ranks(trainer)
        message = lost_rank_message(trainer, run_dir, err, children)
        for proc in children:  # they cannot go on without this rank; they leave the report to it
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
        if _launched_by_lightning() and os.getppid() == _PARENT_PID:
            raise SystemExit(EXIT_BAD_INPUT) from None  # quietly: this node's first process reports it
        raise RankLostError(message) from err


def train(cfg: DictConfig, run_dir: Path, wandb_group: str | None = None) -> dict[str, Any]:
    """Fit, test and write ``results.json`` into ``run_dir``; return the results."""
    started = time.perf_counter()
    validate(cfg)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule: ImageDataModule = instantiate(cfg.data)
    datamodule.setup("fit")  # surfaces data errors (missing folder, offline CIFAR) before any model work
    module = build_module(cfg, datamodule)
    logger = build_logger(cfg, run_dir, wandb_group)
    callbacks = build_callbacks(cfg, run_dir, with_logger=logger is not None)
    trainer: L.Trainer = instantiate(
        cfg.trainer,
        logger=logger if logger is not None else False,
        callbacks=list(callbacks.values()),
        default_root_dir=str(run_dir),
        sync_batchnorm=cfg.recipe.sync_batchnorm,
        use_distributed_sampler=False,  # our loaders shard exactly (lit/data.py)
        plugins=[AtomicCheckpointIO()],  # a kill or a full disk never leaves a broken checkpoint
    )

    resume = resume_path(cfg, run_dir)
    if resume is not None:  # ckpt_path and an auto-resumed last.ckpt get the same checks
        key = "ckpt_path" if cfg.ckpt_path else "auto_resume"
        check_resume_checkpoint(key, resume, module.hparams, module.state_dict())
    with stop_on_lost_rank(trainer, run_dir):
        trainer.fit(module, datamodule=datamodule, ckpt_path=resume, weights_only=True)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
    if cfg.test:
        best = getattr(trainer.checkpoint_callback, "best_model_path", "")
        with stop_on_lost_rank(trainer, run_dir):
            tested = trainer.test(module, datamodule=datamodule, ckpt_path=best or None, weights_only=True)[0]
        metrics.update({k: float(v) for k, v in tested.items()})

    results = collect_results(cfg, module, trainer, metrics, started, run_dir)
    if trainer.is_global_zero:
        write_results(run_dir, results)  # first: a failing plot or W&B call can no longer lose the numbers
        if module.test_confusion is not None:
            from mobilenet_pl.plots import save_confusion_matrix

            try:
                save_confusion_matrix(
                    module.test_confusion, module.hparams["class_names"] or [], run_dir / "confusion_matrix.png"
                )
            except Exception as err:  # a figure is a convenience; results.json is already written
                log.warning("could not draw confusion_matrix.png (%s: %s)", err.__class__.__name__, err)
        if isinstance(logger, TrackedWandbLogger):
            from mobilenet_pl.tracking import finish

            results["wandb_sync"] = finish(logger)
            write_results(run_dir, results)
        print(format_summary(results))
    return results


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


def hydra_job(cfg: DictConfig) -> float | None:
    """One Hydra job; returns best val top-1 so sweepers (Optuna) can optimise it."""
    hydra_cfg = HydraConfig.get()
    check_shared_run_dir(cfg, hydra_cfg)
    run_dir = Path(hydra_cfg.runtime.output_dir)
    # jobs of one sweep share a W&B group named after the sweep dir; each job is its own W&B run
    group = Path(hydra_cfg.sweep.dir).name if hydra_cfg.mode == RunMode.MULTIRUN else None
    with run_dir_lock(run_dir), ddp_job_scope(cfg, run_dir):
        return train(cfg, run_dir, group)["metrics"].get("val/acc1")


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m mobilenet_pl.train`` and the ``mobilenet-pl-train`` console script."""
    if _launched_by_lightning():
        # an extra DDP rank: train the launching job's config, in its run dir, without Hydra
        with error_boundary():
            cfg = OmegaConf.create(os.environ[DDP_CONFIG_ENV])
            assert isinstance(cfg, DictConfig)
            train(cfg, Path(os.environ[DDP_JOB_ENV]))
        return 0
    args = list(sys.argv[1:] if argv is None else argv)
    if _launched_as_extra_process() and not any(arg.startswith("hydra.output_subdir=") for arg in args):
        args.append("hydra.output_subdir=null")  # .hydra/ of the shared run dir is the first process's
    status = run_tool("train", hydra_job, args)
    if status and argv is None:  # the real command line: exit even where the caller ignores the status
        raise SystemExit(status)
    return status


if __name__ == "__main__":
    sys.exit(main())
