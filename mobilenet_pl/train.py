"""Train a MobileNet: ``python -m mobilenet_pl.train [group=option ...] [key=value ...]``.

Reads top to bottom: validate the config -> seed -> data -> model -> trainer -> fit -> test ->
results.json. With no arguments it trains a small-input MobileNetV2 on the bundled digits in a few
minutes on a CPU. Groups: model, data, optimizer, scheduler, trainer, logger, callbacks, experiment
(see ``--help`` and docs/training.md).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hydra
import lightning as L
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from mobilenet_pl.config import ConfigError, config_dir, register_schema, validate
from mobilenet_pl.lit.classifier import MobileNetClassifier
from mobilenet_pl.lit.data import ImageDataModule
from mobilenet_pl.models import create_model
from mobilenet_pl.models.cost import count_madds
from mobilenet_pl.results import format_summary, write_results

log = logging.getLogger("mobilenet_pl")
register_schema()


@contextlib.contextmanager
def reported_errors() -> Iterator[None]:
    """Bad input becomes one ``error:`` line and exit status 2 (HYDRA_FULL_ERROR=1 shows the traceback)."""
    try:
        yield
    except (ConfigError, InstantiationException, ValueError, FileNotFoundError) as err:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        cause = err.__cause__ if isinstance(err, InstantiationException) and err.__cause__ else err
        message = str(cause).strip()
        if isinstance(err, InstantiationException) and not isinstance(
            cause, (ValueError, FileNotFoundError, RuntimeError)
        ):
            raise
        print(f"error: {message}", file=sys.stderr)
        sys.exit(2)


def build_module(cfg: DictConfig, datamodule: ImageDataModule) -> MobileNetClassifier:
    """The LightningModule from plain values: config dicts become plain dicts (checkpoints stay safe)."""
    model = cfg.model
    small_input = datamodule.small_input if model.small_input is None else model.small_input
    return MobileNetClassifier(
        model=model.name,
        width=float(cfg.width),
        num_classes=datamodule.num_classes,
        in_chans=datamodule.in_chans,
        resolution=datamodule.resolution,
        dropout=model.dropout,
        drop_path_rate=model.drop_path_rate,
        small_input=bool(small_input),
        act_layer=model.act_layer,
        init=model.init,
        pretrained=model.pretrained,
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
        if name == "lr_monitor" and not with_logger:
            continue  # LearningRateMonitor refuses to run without a logger
        extra = {"dirpath": str(run_dir / "checkpoints")} if name == "checkpoint" else {}
        callbacks[name] = instantiate(conf, **extra)
    return callbacks


def build_logger(cfg: DictConfig, run_dir: Path) -> Any:
    if not cfg.logger or "_target_" not in cfg.logger:
        return None
    if cfg.logger._target_.endswith("wandb_logger"):
        hydra_cfg = HydraConfig.get()
        # jobs of one sweep share a W&B group named after the sweep dir; each job is its own run
        group = Path(hydra_cfg.sweep.dir).name if hydra_cfg.mode == RunMode.MULTIRUN else None
        logger = instantiate(cfg.logger, save_dir=str(run_dir), group=group)
        logger.log_hyperparams({"config": OmegaConf.to_container(cfg, resolve=True)})  # the resolved config
        return logger
    return instantiate(cfg.logger, save_dir=str(run_dir))


def collect_results(
    cfg: DictConfig,
    module: MobileNetClassifier,
    trainer: L.Trainer,
    metrics: dict[str, float],
    started: float,
    run_dir: Path,
) -> dict[str, Any]:
    hp = module.hparams
    model = create_model(
        hp["model"],
        width=hp["width"],
        num_classes=hp["num_classes"],
        in_chans=hp["in_chans"],
        small_input=hp["small_input"],
    )
    madds, _ = count_madds(model, hp["resolution"], hp["in_chans"])
    ckpt = trainer.checkpoint_callback
    best_val = getattr(ckpt, "best_model_score", None)
    if best_val is not None:
        metrics["val/acc1"] = float(best_val)
    last = Path(ckpt.dirpath or "", "last.ckpt") if ckpt is not None and ckpt.dirpath else None  # type: ignore[attr-defined]
    throughput = next((cb for cb in trainer.callbacks if hasattr(cb, "images_per_sec")), None)  # type: ignore[attr-defined]
    return {
        "model": hp["model"],
        "width": hp["width"],
        "resolution": hp["resolution"],
        "small_input": hp["small_input"],
        "params": sum(p.numel() for p in model.parameters()),
        "madds": madds,
        "metrics": metrics,
        "test_samples": int(metrics.pop("test/samples", 0)),
        "checkpoint": (getattr(ckpt, "best_model_path", "") or None) if ckpt else None,
        "last_checkpoint": str(last) if last and last.is_file() else None,
        "epochs": trainer.current_epoch,
        "train_images_per_s": getattr(throughput, "images_per_sec", 0.0),
        "wall_time_s": time.perf_counter() - started,
        "seed": cfg.seed,
        "run_dir": str(run_dir),
    }


def train(cfg: DictConfig) -> dict[str, Any]:
    """Fit, test and write ``results.json`` into the Hydra run dir; return the results."""
    started = time.perf_counter()
    validate(cfg)
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule: ImageDataModule = instantiate(cfg.data)
    datamodule.setup("fit")  # surfaces data errors (missing folder, offline CIFAR) before any model work
    module = build_module(cfg, datamodule)
    logger = build_logger(cfg, run_dir)
    callbacks = build_callbacks(cfg, run_dir, with_logger=logger is not None)
    trainer: L.Trainer = instantiate(
        cfg.trainer,
        logger=logger if logger is not None else False,
        callbacks=list(callbacks.values()),
        default_root_dir=str(run_dir),
        sync_batchnorm=cfg.recipe.sync_batchnorm,
    )

    trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.ckpt_path)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
    if cfg.test:
        best = getattr(trainer.checkpoint_callback, "best_model_path", "")
        tested = trainer.test(module, datamodule=datamodule, ckpt_path=best or None, weights_only=True)[0]
        metrics.update({k: float(v) for k, v in tested.items()})

    results = collect_results(cfg, module, trainer, metrics, started, run_dir)
    if trainer.is_global_zero:
        if module.test_confusion is not None:
            from mobilenet_pl.plots import save_confusion_matrix

            save_confusion_matrix(
                module.test_confusion, module.hparams["class_names"] or [], run_dir / "confusion_matrix.png"
            )
        if logger is not None and hasattr(logger, "resolved_mode"):
            from mobilenet_pl.tracking import finish

            results["wandb_sync"] = finish(logger)
        write_results(run_dir, results)
        print(format_summary(results))
    return results


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="train")
def main(cfg: DictConfig) -> float | None:
    """Hydra entry point; returns best val top-1 so sweepers (Optuna) can optimise it."""
    with reported_errors():
        return train(cfg)["metrics"].get("val/acc1")
    return None


if __name__ == "__main__":
    main()
