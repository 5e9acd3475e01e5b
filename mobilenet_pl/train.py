"""Train a MobileNet: ``python -m mobilenet_pl.train [group=option ...] [key=value ...]``.

Reads top to bottom: validate the config -> seed -> data -> model -> trainer -> fit -> test ->
results.json. With no arguments it trains a small-input MobileNetV2 on the bundled digits in a few
minutes on a CPU. Groups: model, data, optimizer, scheduler, trainer, logger, callbacks, experiment,
hparams_search (see ``--help``, docs/training.md and docs/scaling.md).

DDP, several nodes and SLURM tasks: how one job spans processes is in ``ddp_job.py``.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from mobilenet_pl.app.config import check_resume_checkpoint, validate
from mobilenet_pl.app.ddp_job import (
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
from mobilenet_pl.app.errors import error_boundary
from mobilenet_pl.app.results import CONFUSION_FILE, format_summary, read_sweep_id, write_results
from mobilenet_pl.app.run_dir import resume_path, run_dir_lock
from mobilenet_pl.app.runner import lightning_logs_once, quiet_third_party, run_tool, save_run_record

if TYPE_CHECKING:
    from mobilenet_pl.lit.data import ImageDataModule

log = logging.getLogger("mobilenet_pl")


def train(
    cfg: DictConfig, run_dir: Path, wandb_group: str | None = None, sweep_id: str | None = None
) -> dict[str, Any]:
    """Fit, test and write ``results.json`` (with ``sweep_id``, a sweep's job) into ``run_dir``; return the results."""
    started = time.perf_counter()
    validate(cfg)
    resume = resume_path(cfg, run_dir)
    # imported here, not at the top: a mistake in the config is reported before torch and Lightning load
    import lightning as L

    from mobilenet_pl.app.build import build_logger, build_module, collect_results
    from mobilenet_pl.app.callbacks import EpochLines, build_callbacks
    from mobilenet_pl.app.tracking import TrackedWandbLogger
    from mobilenet_pl.lit.checkpoint_io import AtomicCheckpointIO

    lightning_logs_once()
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule: ImageDataModule = instantiate(cfg.data)
    datamodule.setup("fit")  # surfaces data errors (missing folder, offline CIFAR) before any model work
    hand_on_eval_checks()  # the DDP ranks Lightning launches need not decode every evaluation image again
    module = build_module(cfg, datamodule)
    if resume is not None:  # ckpt_path and an auto-resumed last.ckpt get the same checks
        key = "ckpt_path" if cfg.ckpt_path else "auto_resume"
        settings = {"trainer.max_epochs": cfg.trainer.get("max_epochs"), "data.batch_size": cfg.data.batch_size}
        changed = check_resume_checkpoint(key, resume, module.hparams, datamodule, settings)
        if changed:
            print(f"resuming {resume} with changed settings: {', '.join(changed)}", flush=True)
    save_run_record()  # the run is accepted: only now its .hydra/ record may replace an earlier run's
    logger = build_logger(cfg, run_dir, wandb_group)
    callbacks = build_callbacks(cfg.callbacks, run_dir / "checkpoints", with_logger=logger is not None)
    bar: dict[str, Any] = {}
    if "enable_progress_bar" not in cfg.trainer and not sys.stdout.isatty():
        # a log file or a pipe: a live bar would write its redraws (control sequences where colour is forced)
        bar = {"enable_progress_bar": False}
        callbacks["epoch_lines"] = EpochLines()
    trainer: L.Trainer = instantiate(
        cfg.trainer,
        logger=logger if logger is not None else False,
        callbacks=list(callbacks.values()),
        default_root_dir=str(run_dir),
        sync_batchnorm=cfg.recipe.sync_batchnorm,
        use_distributed_sampler=False,  # our loaders shard exactly (lit/data/sampling.py)
        plugins=[AtomicCheckpointIO()],  # a kill or a full disk never leaves a broken checkpoint
        **bar,
    )

    with stop_on_lost_rank(trainer, run_dir):
        trainer.fit(module, datamodule=datamodule, ckpt_path=resume, weights_only=True)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
    if cfg.test:
        best = getattr(trainer.checkpoint_callback, "best_model_path", "")
        with stop_on_lost_rank(trainer, run_dir):
            tested = trainer.test(module, datamodule=datamodule, ckpt_path=best or None, weights_only=True)[0]
        metrics.update({k: float(v) for k, v in tested.items()})

    results = collect_results(cfg, module, trainer, metrics, started, run_dir)
    if sweep_id is not None:  # the sweep's summary lists its own jobs only
        results["sweep_id"] = sweep_id
    if trainer.is_global_zero:
        write_results(run_dir, results)  # first: a failing plot or W&B call can no longer lose the numbers
        if module.test_confusion is not None:
            from mobilenet_pl.app.plots import save_confusion_matrix

            try:
                save_confusion_matrix(
                    module.test_confusion, module.hparams["class_names"] or [], run_dir / CONFUSION_FILE
                )
            except Exception as err:  # a figure is a convenience; results.json is already written
                log.warning("could not draw confusion_matrix.png (%s: %s)", err.__class__.__name__, err)
        if isinstance(logger, TrackedWandbLogger):
            from mobilenet_pl.app.tracking import finish

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
    sweep = hydra_cfg.mode == RunMode.MULTIRUN
    group = Path(hydra_cfg.sweep.dir).name if sweep else None
    sweep_id = read_sweep_id(Path(hydra_cfg.sweep.dir)) if sweep else None
    with run_dir_lock(run_dir), ddp_job_scope(cfg, run_dir):
        return train(cfg, run_dir, group, sweep_id)["metrics"].get("val/acc1")


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m mobilenet_pl.train`` and the ``mobilenet-pl-train`` console script."""
    if launched_by_lightning():
        # an extra DDP rank: train the launching job's config, in its run dir, without Hydra
        with error_boundary(), quiet_third_party():
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
