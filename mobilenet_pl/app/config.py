"""The config schemas of every entry point and the value checks run before any work starts.

Each tool's schema (a dataclass registered in Hydra's ConfigStore as ``<tool>_schema``) types its
top-level keys, so ``width=abc`` or a misspelt key fails at composition. The schemas hold no defaults
(``MISSING``): every default lives once, in ``conf/<tool>.yaml``, next to the comment that explains it.
``validate`` and `check_at_least` then check ranges and paths and raise `ConfigError` naming the key.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, fields
from enum import Enum
from pathlib import Path
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from mobilenet_pl.app.errors import ConfigError
from mobilenet_pl.models.mobilenet import MIN_INPUT_SIZE

CONFIG_DIR_NAME = "conf"
TOOLS = ("train", "eval", "profile", "export", "quantize", "benchmark", "report")

# sane upper bounds: far past any MobileNet in the papers, well before memory runs out
MAX_WIDTH = 4.0
MAX_SIZE = 2048
MAX_SEED = 2**32 - 1  # numpy's seed range, which Lightning's seed_everything uses
# Lightning Trainer keys that must be whole numbers >= 1 when set
WHOLE_TRAINER_KEYS = ("max_epochs", "check_val_every_n_epoch", "log_every_n_steps", "num_nodes")

# Optional[...] rather than ``X | None``: OmegaConf reads these annotations at run time (Python 3.10 too)
# ruff: noqa: UP045


class ExportFormat(Enum):
    onnx = "onnx"
    executorch = "executorch"
    torchscript = "torchscript"  # deprecated upstream; ExecuTorch replaces it on devices


class QuantizeFormat(Enum):
    executorch = "executorch"
    onnx = "onnx"


class QuantizeMethod(Enum):
    ptq = "ptq"
    qat = "qat"


class Family(Enum):
    all = "all"
    v1 = "v1"
    v2 = "v2"


class Device(Enum):
    cpu = "cpu"
    cuda = "cuda"


class Precision(Enum):
    fp32 = "fp32"
    bf16 = "bf16"
    fp16 = "fp16"


class Section(Enum):
    train = "train"
    infer = "infer"
    lightning = "lightning"
    pipeline = "pipeline"
    export = "export"
    app = "app"
    modes = "modes"
    deploy = "deploy"


class Mode(Enum):
    eager = "eager"
    compile = "compile"
    cudagraphs = "cudagraphs"


@dataclass
class RecipeSchema:
    label_smoothing: float = MISSING
    mixup: float = MISSING
    cutmix: float = MISSING
    ema_decay: float = MISSING
    scale_lr: bool = MISSING
    sync_batchnorm: bool = MISSING


@dataclass
class TrainSchema:
    width: float = MISSING
    resolution: Optional[int] = MISSING
    seed: int = MISSING
    ckpt_path: Optional[str] = MISSING
    auto_resume: bool = MISSING
    test: bool = MISSING
    channels_last: bool = MISSING
    compile: bool = MISSING
    project: str = MISSING
    run_name: Optional[str] = MISSING
    recipe: RecipeSchema = MISSING
    model: Any = MISSING
    data: Any = MISSING
    optimizer: Any = MISSING
    scheduler: Any = MISSING
    trainer: Any = MISSING
    logger: Any = MISSING
    callbacks: Any = MISSING


@dataclass
class EvalSchema:
    ckpt_path: str = MISSING
    split: str = MISSING
    resolution: Optional[int] = MISSING
    seed: int = MISSING
    batch_size: int = MISSING
    device: str = MISSING
    data: Any = MISSING


@dataclass
class ProfileSchema:
    model: Any = MISSING
    width: float = MISSING
    resolution: int = MISSING
    num_classes: int = MISSING
    json: bool = MISSING
    paper: bool = MISSING


@dataclass
class ExportSchema:
    ckpt_path: str = MISSING
    format: ExportFormat = MISSING
    out: Optional[str] = MISSING
    overwrite: bool = MISSING
    check: bool = MISSING
    opset: int = MISSING
    resolution: Optional[int] = MISSING
    mean: Optional[list[float]] = MISSING
    std: Optional[list[float]] = MISSING


@dataclass
class QuantizeSchema:
    ckpt_path: str = MISSING
    format: QuantizeFormat = MISSING
    method: QuantizeMethod = MISSING
    out: Optional[str] = MISSING
    overwrite: bool = MISSING
    calib_batches: int = MISSING
    batch_size: int = MISSING
    calls: int = MISSING
    repeats: int = MISSING
    threads: Optional[int] = MISSING
    json: bool = MISSING
    resolution: Optional[int] = MISSING
    seed: int = MISSING
    qat_epochs: int = MISSING
    qat_lr: float = MISSING
    qat_freeze_bn_epoch: int = MISSING
    qat_freeze_observer_epoch: int = MISSING
    qat_dir: Optional[str] = MISSING
    qat_ckpt_path: Optional[str] = MISSING
    data: Any = MISSING
    logger: Any = MISSING


@dataclass
class BenchmarkSchema:
    family: Family = MISSING
    width: float = MISSING
    resolution: Optional[int] = MISSING
    batch_size: Optional[int] = MISSING
    steps: Optional[int] = MISSING
    device: Device = MISSING
    precision: Precision = MISSING
    channels_last: bool = MISSING
    compile: bool = MISSING
    repeats: int = MISSING
    warmup: int = MISSING
    infer_batch: int = MISSING
    threads: Optional[int] = MISSING
    sections: list[Section] = MISSING
    json: Optional[str] = MISSING
    app_images: Optional[int] = MISSING
    app_classes: int = MISSING
    app_steps: Optional[int] = MISSING
    app_workers: Optional[int] = MISSING
    modes: list[Mode] = MISSING
    modes_batches: Optional[list[int]] = MISSING


@dataclass
class ReportSchema:
    sweep_dir: str = MISSING


SCHEMAS: dict[str, type] = {
    "train": TrainSchema,
    "eval": EvalSchema,
    "profile": ProfileSchema,
    "export": ExportSchema,
    "quantize": QuantizeSchema,
    "benchmark": BenchmarkSchema,
    "report": ReportSchema,
}


def register_schemas() -> None:
    """Store every tool's schema in Hydra's ConfigStore as ``<tool>_schema`` (conf/<tool>.yaml extends it)."""
    store = ConfigStore.instance()
    for tool, schema in SCHEMAS.items():
        store.store(name=f"{tool}_schema", node=schema)


def config_dir() -> str:
    """The ``conf/`` folder: inside the installed wheel, or at the repository root (editable install)."""
    package = Path(__file__).resolve().parents[1]  # mobilenet_pl/
    for candidate in (package / CONFIG_DIR_NAME, package.parent / CONFIG_DIR_NAME):
        if (candidate / "train.yaml").is_file():
            return str(candidate)
    raise FileNotFoundError(f"mobilenet_pl configs not found next to {package}; reinstall the package")


def _number(
    key: str, value: Any, minimum: float, *, inclusive: bool, kind: str = "number", maximum: float | None = None
) -> None:
    """``value`` is a finite number (an ``int`` where ``kind`` is a whole number) in its range, or `ConfigError`."""
    whole = kind == "whole number"
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (isinstance(value, int) or not whole)  # 1.5 epochs or images per batch fail later, deep inside
    if not ok or (value < minimum if inclusive else value <= minimum) or (maximum is not None and value > maximum):
        bound = f">= {minimum:g}" if inclusive else f"> {minimum:g}"
        if maximum is not None:
            bound = f"{bound} and <= {int(maximum) if float(maximum).is_integer() else maximum}"
        raise ConfigError(f"{key}={value!r} is not allowed: {key} must be a {kind} {bound}")


def check_values(cfg: DictConfig, at_least: dict[str, float], positive: tuple[str, ...] = ()) -> None:
    """Each key of ``at_least`` (whole numbers; None means "the default" and passes) is >= its bound; each
    key of ``positive`` is a number > 0. Raises `ConfigError` naming the first key that is not."""
    for key in positive:
        _number(key, OmegaConf.select(cfg, key), 0, inclusive=False)
    for key, minimum in at_least.items():
        value = OmegaConf.select(cfg, key)
        if value is not None:
            _number(key, value, minimum, inclusive=True, kind="whole number")


def _device_count(accelerator: str) -> int:
    import torch

    if accelerator in ("gpu", "cuda"):
        return torch.cuda.device_count()
    if accelerator == "cpu":
        return 10**6  # CPU "devices" are processes
    return torch.cuda.device_count() or 10**6


def _check_randaugment(value: Any) -> None:
    """timm's RandAugment string, parsed as timm will; timm silently skips sections it cannot read."""
    from timm.data.auto_augment import rand_augment_transform

    text = str(value)
    sections = text.split("-")
    unread = [part for part in sections[1:] if not part.startswith("t") and not any(ch.isdigit() for ch in part)]
    try:
        rand_augment_transform(text, {})
        ok = not unread
    except (AssertionError, ValueError, KeyError):
        ok = False
    if not ok:
        raise ConfigError(
            f"data.randaugment={text!r} is not allowed: it must be a timm RandAugment string such as rand-m9-mstd0.5"
        )


def _check_trainer(trainer: DictConfig) -> None:
    devices = trainer.get("devices", 1)
    if isinstance(devices, int):
        _number("trainer.devices", devices, 1, inclusive=True, kind="whole number")
        available = _device_count(str(trainer.get("accelerator", "auto")))
        if devices > available:
            raise ConfigError(
                f"trainer.devices={devices} is not allowed: only {available} {trainer.accelerator} device(s) here"
            )
    for key in WHOLE_TRAINER_KEYS:  # None (Lightning's default) passes
        value = trainer.get(key, 1)
        if value is not None:
            _number(f"trainer.{key}", value, 1, inclusive=True, kind="whole number")


def validate(cfg: DictConfig) -> None:
    """Check values the schema cannot: ranges, whole numbers, paths, device counts, pairings of keys."""
    _number("width", cfg.width, 0, inclusive=False, maximum=MAX_WIDTH)
    if cfg.resolution is not None:
        _number("resolution", cfg.resolution, MIN_INPUT_SIZE, inclusive=True, kind="whole number", maximum=MAX_SIZE)
    _number("seed", cfg.seed, 0, inclusive=True, kind="whole number", maximum=MAX_SEED)
    data = cfg.data
    _number("data.batch_size", data.batch_size, 1, inclusive=True, kind="whole number")
    _number("data.num_workers", data.get("num_workers", 0), 0, inclusive=True, kind="whole number")
    if data.get("randaugment"):
        _check_randaugment(data.randaugment)
    _number("optimizer.lr", cfg.optimizer.lr, 0, inclusive=False)
    if "step_size" in cfg.scheduler:
        _number("scheduler.step_size", cfg.scheduler.step_size, 1, inclusive=True, kind="whole number")
    has_root = "root" in data or OmegaConf.is_missing(data, "root")  # ``in`` is False for ??? values
    if has_root and data.get("download") is None:  # image folders must exist; CIFAR may download
        if OmegaConf.is_missing(data, "root") or not data.root:
            raise ConfigError(
                "data.root is missing: set data.root=/path/to/images (with train/<class>/ and val/<class>/)"
            )
        root = Path(str(data.root)).expanduser()
        if not root.is_dir() or not any(root.iterdir()):
            raise ConfigError(f"data.root={str(root)!r} is not allowed: it must be an existing, non-empty folder")
    pretrained = cfg.model.get("pretrained")
    if isinstance(pretrained, str) and Path(pretrained).expanduser().is_file():
        _check_weights_file("model.pretrained", pretrained)
    _check_recipe(cfg.recipe, data.batch_size)
    _check_trainer(cfg.trainer)
    for group in ("data", "trainer", "logger"):
        _check_target_keys(group, cfg.get(group))
    _check_callbacks(cfg)
    if cfg.ckpt_path is not None:
        check_checkpoint("ckpt_path", str(cfg.ckpt_path))


# the numbers of the app's own callbacks (conf/callbacks/default.yaml) and their least values; a callback
# removed with ``~callbacks.NAME`` has none to check
CALLBACK_MINIMUMS: dict[str, float] = {
    "callbacks.throughput.min_warmup_steps": 0,
    "callbacks.wandb_report.num_samples": 0,
    "callbacks.progress_rate.max_per_second": 1,
    "callbacks.nonfinite.check_every_n_steps": 1,
}


def _check_callbacks(cfg: DictConfig) -> None:
    """Each callback's keys are arguments of its class and the app's callbacks' numbers are in range: a bad
    value would otherwise surface as a TypeError inside instantiation, or be silently raised to the least."""
    for name, node in (cfg.get("callbacks") or {}).items():
        _check_target_keys(f"callbacks.{name}", node)
    check_values(cfg, CALLBACK_MINIMUMS)
    fraction = OmegaConf.select(cfg, "callbacks.throughput.warmup_fraction")
    if fraction is not None:
        _number("callbacks.throughput.warmup_fraction", fraction, 0, inclusive=True, maximum=1)


def _check_target_keys(group: str, node: Any) -> None:
    """Every key of a group built by ``_target_`` is an argument of that class (``+data.bogus=1`` would
    otherwise be a TypeError deep inside instantiation)."""
    import inspect

    from hydra.utils import get_object

    if not isinstance(node, DictConfig) or "_target_" not in node:
        return
    try:
        target = get_object(str(node._target_))
    except (ImportError, ValueError):  # Hydra reports a target it cannot import by itself
        return
    # a class whose __init__ passes **kwargs on: the arguments of its bases' __init__ count too
    chain = (
        [c.__dict__["__init__"] for c in target.__mro__ if "__init__" in c.__dict__]
        if isinstance(target, type)
        else [target]
    )
    params: dict[str, Any] = {}
    for function in chain:
        try:
            found = inspect.signature(function).parameters
        except (ValueError, TypeError):
            return
        params.update(found)
        if not any(p.kind == p.VAR_KEYWORD for p in found.values()):
            break
    else:
        return  # **kwargs all the way down: anything may be meant
    unknown = [str(key) for key in node if not str(key).startswith("_") and key not in params]
    if unknown:
        raise ConfigError(
            f"{group}.{unknown[0]} is not allowed: {str(node._target_).rsplit('.', 1)[-1]} has no argument {unknown[0]!r}"
        )


def _check_weights_file(key: str, path: str) -> None:
    """A weights file the model will start from reads as a state dict (any failure: one line, not a trace)."""
    from mobilenet_pl.models.convert import read_weights_file

    try:
        read_weights_file(path)
    except Exception as err:  # a garbage .safetensors, a pickled list, integer keys, ...
        first = (str(err).strip().splitlines() or [err.__class__.__name__])[0]
        raise ConfigError(
            f"{key}={path!r} is not allowed: not a readable weights file ({err.__class__.__name__}: {first[:200]})"
        ) from err


def _check_recipe(recipe: DictConfig, batch_size: int) -> None:
    _number("recipe.label_smoothing", recipe.label_smoothing, 0, inclusive=True)
    if recipe.label_smoothing >= 1:  # 1 would train towards the uniform distribution
        raise ConfigError(f"recipe.label_smoothing={recipe.label_smoothing!r} is not allowed: it must be in [0, 1)")
    for key in ("mixup", "cutmix"):
        _number(f"recipe.{key}", recipe[key], 0, inclusive=True)
        if recipe[key] > 0 and batch_size % 2:  # timm's Mixup mixes each image with its mirror in the batch
            raise ConfigError(
                f"recipe.{key}={recipe[key]!r} is not allowed with data.batch_size={batch_size}: "
                "timm Mixup/CutMix needs an even batch size"
            )
    if not 0 <= recipe.ema_decay < 1:
        raise ConfigError(f"recipe.ema_decay={recipe.ema_decay!r} is not allowed: it must be in [0, 1)")


def check_run_dir(path: str) -> None:
    """The run dir can be made and written: its nearest existing folder is a writable folder."""
    target = Path(path).expanduser().absolute()
    existing = next(p for p in (target, *target.parents) if p.exists())
    if not existing.is_dir():
        raise ConfigError(f"hydra.run.dir={path!r} is not allowed: {str(existing)!r} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"hydra.run.dir={path!r} is not allowed: {str(existing)!r} is not writable")


def check_known_keys(tool: str, cfg: DictConfig) -> None:
    """A top-level key the tool's schema does not name (``+modle=v1``) would be silently ignored: refuse it."""
    known = {field.name for field in fields(SCHEMAS[tool])} | {"hydra"}
    unknown = [str(key) for key in cfg if key not in known]
    if unknown:
        raise ConfigError(
            f"{unknown[0]} is not allowed: {tool} has no key {unknown[0]!r} (see python -m mobilenet_pl.{tool} --help)"
        )


def check_checkpoint(key: str, path: str) -> Any:
    """The file exists and holds only tensors and plain values (``torch.load(weights_only=True)``); returns it."""
    import torch

    file = Path(path).expanduser()
    if not file.is_file():
        raise ConfigError(f"{key}={path!r} is not allowed: no such checkpoint file")
    if file.stat().st_size == 0:
        raise ConfigError(f"{key}={path!r} is not allowed: the file is empty (0 bytes)")
    try:
        try:
            return torch.load(file, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as err:
            if "mmap" not in str(err):
                raise
            return torch.load(file, map_location="cpu", weights_only=True)  # a legacy file: the real reason, if any
    except Exception as err:  # UnpicklingError for code objects, RuntimeError for truncated files
        first = str(err).strip().splitlines()[0] if str(err).strip() else err.__class__.__name__
        raise ConfigError(
            f"{key}={path!r} is not allowed: not a loadable tensor-only checkpoint, refused for safety ({first[:200]})"
        ) from err


def _describe(hp: Any) -> str:
    model = hp.get("model") if isinstance(hp, dict) else None
    if not isinstance(model, dict):
        return "an unknown model"
    return (
        f"{model.get('name')} width {model.get('width')} "
        f"({hp.get('num_classes')} classes, {hp.get('in_chans')} channels)"
    )


def check_resume_checkpoint(key: str, path: str, hparams: Any, state_dict: dict[str, Any]) -> None:
    """``path`` is a safe training checkpoint of the model this run builds (``hparams``, ``state_dict``):
    the same checks for ``ckpt_path`` and for the ``last.ckpt`` an auto-resume picks up."""
    from mobilenet_pl.models.hparams import is_our_checkpoint, upgrade_hparams

    loaded = check_checkpoint(key, path)
    if not is_our_checkpoint(loaded):
        raise ConfigError(
            f"{key}={path!r} is not allowed: not a mobilenet_pl training checkpoint "
            "(a plain state dict? start from its weights with model.pretrained=PATH instead)"
        )
    saved = upgrade_hparams(loaded["hyper_parameters"])
    ours = {"model": dict(hparams["model"]), **{k: hparams[k] for k in ("num_classes", "in_chans")}}
    same = all(saved.get("model", {}).get(k) == ours["model"].get(k) for k in ("name", "width")) and all(
        saved.get(k) == ours[k] for k in ("num_classes", "in_chans")
    )
    shapes = {k: tuple(v.shape) for k, v in loaded["state_dict"].items() if hasattr(v, "shape")}
    same = same and all(shapes.get(k, tuple(v.shape)) == tuple(v.shape) for k, v in state_dict.items())
    if not same:
        raise ConfigError(
            f"{key}={path!r} is not allowed: it holds {_describe(saved)}; this run builds {_describe(ours)}"
        )
