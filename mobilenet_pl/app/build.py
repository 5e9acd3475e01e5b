"""The run's parts from the composed config: the LightningModule (plain values only), the logger, and the
``results.json`` record of a finished run."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.loggers import WandbLogger
from omegaconf import DictConfig, OmegaConf

from mobilenet_pl.lit.callbacks import Throughput
from mobilenet_pl.lit.classifier import MobileNetClassifier
from mobilenet_pl.lit.data import ImageDataModule
from mobilenet_pl.models.cost import count_madds


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
        "num_classes": hp["num_classes"],
        # CPU kernels sum in an order set by the thread count: the same seed trains another model with another
        # count (docs/training.md), so the count belongs to the result
        "torch_threads": torch.get_num_threads(),
        "lr": OmegaConf.select(cfg, "optimizer.lr"),
        "run_dir": str(run_dir),
    }
