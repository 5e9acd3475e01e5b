"""Train a MobileNet: ``python -m mobilenet_pl.train [group=option ...] [key=value ...]``.

Reads top to bottom: validate the config -> seed -> data -> model -> trainer -> fit -> test ->
results.json. With no arguments it trains a small-input MobileNetV2 on the bundled digits in a few
minutes on a CPU. Groups: model, data, optimizer, scheduler, trainer, logger, callbacks, experiment,
hparams_search (see ``--help``, docs/training.md and docs/scaling.md).

DDP, several nodes and SLURM tasks: how one job spans processes is in ``ddp_job.py``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import lightning as L
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from lightning.pytorch.loggers import WandbLogger
from omegaconf import DictConfig, OmegaConf

from mobilenet_pl.app_callbacks import build_callbacks
from mobilenet_pl.config import check_resume_checkpoint, validate
from mobilenet_pl.ddp_job import (
    DDP_CONFIG_ENV,
    DDP_JOB_ENV,
    check_shared_run_dir,
    ddp_job_scope,
    hand_on_eval_checks,
    launched_as_extra_process,
    launched_by_lightning,
    stop_on_lost_rank,
    take_eval_checks,
)
from mobilenet_pl.errors import ConfigError, error_boundary
from mobilenet_pl.lit.callbacks import Throughput
from mobilenet_pl.lit.checkpoint_io import AtomicCheckpointIO
from mobilenet_pl.lit.classifier import MobileNetClassifier
from mobilenet_pl.lit.data import ImageDataModule
from mobilenet_pl.models.cost import count_madds
from mobilenet_pl.results import format_summary, write_results
from mobilenet_pl.tool import run_tool
from mobilenet_pl.tracking import TrackedWandbLogger

log = logging.getLogger("mobilenet_pl")


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
    """``ckpt_path``, else (``auto_resume``) the job's own ``last.ckpt`` after a preemption requeue."""
    if cfg.ckpt_path:
        return str(cfg.ckpt_path)
    last = run_dir / "checkpoints" / "last.ckpt"
    return str(last) if cfg.auto_resume and last.is_file() else None


def train(cfg: DictConfig, run_dir: Path, wandb_group: str | None = None) -> dict[str, Any]:
    """Fit, test and write ``results.json`` into ``run_dir``; return the results."""
    started = time.perf_counter()
    validate(cfg)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule: ImageDataModule = instantiate(cfg.data)
    datamodule.setup("fit")  # surfaces data errors (missing folder, offline CIFAR) before any model work
    hand_on_eval_checks()  # the DDP ranks Lightning launches need not decode every evaluation image again
    module = build_module(cfg, datamodule)
    logger = build_logger(cfg, run_dir, wandb_group)
    callbacks = build_callbacks(cfg.callbacks, run_dir / "checkpoints", with_logger=logger is not None)
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
    if launched_by_lightning():
        # an extra DDP rank: train the launching job's config, in its run dir, without Hydra
        with error_boundary():
            cfg = OmegaConf.create(os.environ[DDP_CONFIG_ENV])
            assert isinstance(cfg, DictConfig)
            take_eval_checks()
            train(cfg, Path(os.environ[DDP_JOB_ENV]))
        return 0
    args = list(sys.argv[1:] if argv is None else argv)
    if launched_as_extra_process() and not any(arg.startswith("hydra.output_subdir=") for arg in args):
        args.append("hydra.output_subdir=null")  # .hydra/ of the shared run dir is the first process's
    status = run_tool("train", hydra_job, args)
    if status and argv is None:  # the real command line: exit even where the caller ignores the status
        raise SystemExit(status)
    return status


if __name__ == "__main__":
    sys.exit(main())
