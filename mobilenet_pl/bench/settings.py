"""The benchmark's settings: the composed config, checked, with each device's defaults for the keys left at null."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from mobilenet_pl.app.config import check_values
from mobilenet_pl.app.errors import ConfigError
from mobilenet_pl.bench.step import FAMILIES, MODES, Config
from mobilenet_pl.models.mobilenet import MIN_INPUT_SIZE

SECTIONS = ("train", "infer", "lightning", "pipeline", "export", "app", "modes", "deploy")  # run in this order
# per-device defaults: a CPU run of every default section takes a few minutes on 2 cores
DEVICE_DEFAULTS: dict[str, dict[str, Any]] = {
    "cpu": {"resolution": 128, "batch_size": 16, "steps": 2, "app_images": 256, "app_steps": 20, "modes_batches": [32]},
    "cuda": {
        "resolution": 224,
        "batch_size": 128,
        "steps": 20,
        "app_images": 4096,
        "app_steps": 200,
        "modes_batches": [32, 256],
    },
}


def settings(cfg: DictConfig) -> Config:
    """The run's settings: the composed config with the device's defaults for the keys left at null."""
    device = cfg.device.value
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device=cuda is not allowed: torch.cuda.is_available() is False")
    sized = {key: default if cfg[key] is None else cfg[key] for key, default in DEVICE_DEFAULTS[device].items()}
    bounds = {"resolution": MIN_INPUT_SIZE, "batch_size": 1, "steps": 1, "repeats": 1, "warmup": 0, "infer_batch": 1}
    app_bounds = {"app_images": 2, "app_classes": 1, "app_steps": 1, "app_workers": 0}
    merged = OmegaConf.merge(cfg, sized)
    assert isinstance(merged, DictConfig)
    check_values(merged, {**bounds, **app_bounds, "threads": 1}, positive=("width",))
    if not cfg.sections:
        raise ConfigError(f"sections=[] is not allowed: choose from {list(SECTIONS)}")
    sections = [section.value for section in cfg.sections]
    fewest = max(2 * merged.batch_size, merged.app_classes)
    if "app" in sections and merged.app_images < fewest:
        # the app drops the last partial batch and times from its second batch on; every class needs an image
        raise ConfigError(
            f"app_images={merged.app_images} is not allowed: app_images must be >= 2 x batch_size "
            f"({merged.batch_size}) and >= app_classes ({merged.app_classes})"
        )
    if not merged.modes_batches or any(not isinstance(b, int) or b < 1 for b in merged.modes_batches):
        raise ConfigError(f"modes_batches={list(merged.modes_batches)} is not allowed: a list of whole numbers >= 1")
    if not cfg.modes:
        raise ConfigError(f"modes=[] is not allowed: choose from {list(MODES)}")
    return Config(
        families=list(FAMILIES) if cfg.family.value == "all" else [cfg.family.value],
        width=float(cfg.width),
        device=device,
        precision=cfg.precision.value,
        channels_last=bool(cfg.channels_last),
        compile=bool(cfg.compile),
        repeats=int(cfg.repeats),
        warmup=int(cfg.warmup),
        infer_batch=int(cfg.infer_batch),
        threads=torch.get_num_threads() if cfg.threads is None else int(cfg.threads),
        sections=sections,
        json=cfg.json,
        app_classes=int(cfg.app_classes),
        app_workers=(os.cpu_count() or 1) if cfg.app_workers is None else int(cfg.app_workers),
        modes=[mode.value for mode in cfg.modes],
        modes_batches=[int(b) for b in merged.modes_batches],
        **{key: int(value) for key, value in sized.items() if key != "modes_batches"},
    )


def sync_fn(device: str) -> Callable[[], None]:
    """What to call before reading the clock: CUDA kernels run asynchronously."""
    return torch.cuda.synchronize if device == "cuda" else (lambda: None)
