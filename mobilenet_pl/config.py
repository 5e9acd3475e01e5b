"""The training app's config schema and value checks, run before any work starts.

The schema (a dataclass registered in Hydra's ConfigStore) types the top-level keys, so ``width=abc``
or a misspelt top-level key fails at composition. ``validate`` then checks ranges and paths and raises
``ConfigError`` naming the key, the value and what is allowed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

CONFIG_DIR_NAME = "conf"


class ConfigError(ValueError):
    """A config value outside what is allowed; the app prints it as one line and exits non-zero."""


@dataclass
class RecipeSchema:
    label_smoothing: float = 0.1
    mixup: float = 0.0
    cutmix: float = 0.0
    ema_decay: float = 0.0
    scale_lr: bool = False
    sync_batchnorm: bool = False


@dataclass
class TrainSchema:
    width: float = 1.0
    resolution: int | None = None
    seed: int = 0
    ckpt_path: str | None = None
    auto_resume: bool = True
    test: bool = True
    channels_last: bool = False
    compile: bool = False
    project: str = "mobilenet_pl"
    run_name: str | None = None
    recipe: RecipeSchema = field(default_factory=RecipeSchema)
    model: Any = None
    data: Any = None
    optimizer: Any = None
    scheduler: Any = None
    trainer: Any = None
    logger: Any = None
    callbacks: Any = None


def register_schema() -> None:
    ConfigStore.instance().store(name="train_schema", node=TrainSchema)


def config_dir() -> str:
    """The ``conf/`` folder: inside the installed wheel, or at the repository root (editable install)."""
    here = Path(__file__).resolve().parent
    for candidate in (here / CONFIG_DIR_NAME, here.parent / CONFIG_DIR_NAME):
        if (candidate / "train.yaml").is_file():
            return str(candidate)
    raise FileNotFoundError(f"mobilenet_pl configs not found next to {here}; reinstall the package")


def _number(key: str, value: Any, minimum: float, *, inclusive: bool, kind: str = "number") -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or (value < minimum if inclusive else value <= minimum):
        bound = f">= {minimum:g}" if inclusive else f"> {minimum:g}"
        raise ConfigError(f"{key}={value!r} is not allowed: {key} must be a {kind} {bound}")


def _device_count(accelerator: str) -> int:
    import torch

    if accelerator in ("gpu", "cuda"):
        return torch.cuda.device_count()
    if accelerator == "cpu":
        return 10**6  # CPU "devices" are processes
    return torch.cuda.device_count() or 10**6


def validate(cfg: DictConfig) -> None:
    """Check values the schema cannot: ranges, paths, device counts."""
    _number("width", cfg.width, 0, inclusive=False)
    if cfg.resolution is not None:
        _number("resolution", cfg.resolution, 32, inclusive=True, kind="whole number")
    data = cfg.data
    _number("data.batch_size", data.batch_size, 1, inclusive=True, kind="whole number")
    _number("data.num_workers", data.get("num_workers", 0), 0, inclusive=True, kind="whole number")
    _number("optimizer.lr", cfg.optimizer.lr, 0, inclusive=False)
    has_root = "root" in data or OmegaConf.is_missing(data, "root")  # ``in`` is False for ??? values
    if has_root and data.get("download") is None:  # image folders must exist; CIFAR may download
        if OmegaConf.is_missing(data, "root") or not data.root:
            raise ConfigError(
                "data.root is missing: set data.root=/path/to/images (with train/<class>/ and val/<class>/)"
            )
        root = Path(str(data.root)).expanduser()
        if not root.is_dir() or not any(root.iterdir()):
            raise ConfigError(f"data.root={str(root)!r} is not allowed: it must be an existing, non-empty folder")
    for key in ("label_smoothing", "mixup", "cutmix"):
        _number(f"recipe.{key}", cfg.recipe[key], 0, inclusive=True)
    if not 0 <= cfg.recipe.ema_decay < 1:
        raise ConfigError(f"recipe.ema_decay={cfg.recipe.ema_decay!r} is not allowed: it must be in [0, 1)")
    trainer = cfg.trainer
    devices = trainer.get("devices", 1)
    if isinstance(devices, int):
        _number("trainer.devices", devices, 1, inclusive=True, kind="whole number")
        available = _device_count(str(trainer.get("accelerator", "auto")))
        if devices > available:
            raise ConfigError(
                f"trainer.devices={devices} is not allowed: only {available} {trainer.accelerator} device(s) here"
            )
    _number("trainer.max_epochs", trainer.get("max_epochs", 1), 1, inclusive=True, kind="whole number")
    if cfg.ckpt_path is not None:
        check_checkpoint("ckpt_path", str(cfg.ckpt_path))


def check_checkpoint(key: str, path: str) -> None:
    """The file exists and holds only tensors and plain values (``torch.load(weights_only=True)``)."""
    import torch

    file = Path(path).expanduser()
    if not file.is_file():
        raise ConfigError(f"{key}={path!r} is not allowed: no such checkpoint file")
    try:
        torch.load(file, map_location="cpu", weights_only=True, mmap=True)
    except Exception as err:  # UnpicklingError for code objects, RuntimeError for truncated files
        first = str(err).strip().splitlines()[0] if str(err).strip() else err.__class__.__name__
        raise ConfigError(
            f"{key}={path!r} is not allowed: not a loadable tensor-only checkpoint, refused for safety ({first[:200]})"
        ) from err
