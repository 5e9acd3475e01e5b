"""The config schemas of every entry point and the value checks run before any work starts.

Each tool's schema (a dataclass registered in Hydra's ConfigStore as ``<tool>_schema``) types its
top-level keys, so ``width=abc`` or a misspelt key fails at composition. The schemas hold no defaults
(``MISSING``): every default lives once, in ``conf/<tool>.yaml``, next to the comment that explains it.
``validate`` and `check_at_least` then check ranges and paths and raise `ConfigError` naming the key.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Iterable
from dataclasses import dataclass, fields
from enum import Enum
from pathlib import Path
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, ListConfig, OmegaConf

from mobilenet_pl.app.errors import ConfigError

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


# typed groups inside a tool's schema, whose keys are checked like the top-level ones
SCHEMA_GROUPS: dict[str, type] = {"recipe": RecipeSchema}


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
    from mobilenet_pl._checks import is_finite_number

    whole = kind == "whole number"
    ok = is_finite_number(value) and (
        isinstance(value, int) or not whole
    )  # 1.5 epochs or images per batch fail later, deep inside
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


def _accelerator_available(name: str) -> bool:
    from lightning.pytorch.accelerators import AcceleratorRegistry

    try:
        return bool(AcceleratorRegistry[name]["accelerator"].is_available())
    except Exception:  # XLA without torch_xla raises ModuleNotFoundError
        return False


def _check_accelerator(value: Any) -> None:
    """A name Lightning knows, for a device this machine has (tpu without torch_xla was a traceback)."""
    if not isinstance(value, str) or value in ("auto", "cpu"):  # always here: no Lightning import needed
        return
    from lightning.pytorch.accelerators import AcceleratorRegistry

    known = sorted(AcceleratorRegistry.available_accelerators())
    if value not in (*known, "gpu"):
        raise ConfigError(
            f"trainer.accelerator={value!r} is not allowed: it must be one of {', '.join([*known, 'gpu', 'auto'])}"
        )
    here = any(_accelerator_available(n) for n in ("cuda", "mps")) if value == "gpu" else _accelerator_available(value)
    if not here:
        found = ", ".join(n for n in known if _accelerator_available(n))
        raise ConfigError(
            f"trainer.accelerator={value!r} is not allowed: no {value} device here (this machine has: {found}); "
            "use trainer.accelerator=auto"
        )


def _check_device_ids(devices: Any, accelerator: str) -> None:
    """``trainer.devices`` as a list of device indices: distinct indices of devices that exist; CPU "devices"
    are a number of processes, never indices."""
    shown = list(devices) if not isinstance(devices, str) else devices
    ids = [part.strip() for part in devices.split(",") if part.strip()] if isinstance(devices, str) else list(devices)
    try:
        numbers = [int(i) for i in ids if not isinstance(i, bool) and float(i) == int(i)]
    except (TypeError, ValueError):
        numbers = []
    if len(numbers) != len(ids) or not numbers or min(numbers) < 0 or len(set(numbers)) != len(numbers):
        raise ConfigError(
            f"trainer.devices={shown!r} is not allowed: a list of devices must hold distinct device indices >= 0 "
            "(or give a number of devices: trainer.devices=2)"
        )
    gpus = _device_count("cuda")
    if accelerator == "cpu" or (accelerator == "auto" and gpus == 0):
        raise ConfigError(
            f"trainer.devices={shown!r} is not allowed: CPU devices are a number of processes, not indices; "
            f"give trainer.devices={len(numbers)}"
        )
    if max(numbers) >= gpus:
        raise ConfigError(
            f"trainer.devices={shown!r} is not allowed: only {gpus} GPU(s) here (indices 0 to {gpus - 1})"
        )


def _check_trainer(trainer: DictConfig) -> None:
    devices = trainer.get("devices", 1)
    if isinstance(devices, str) and devices.strip().lstrip("-").isdigit():
        devices = int(devices)
    if isinstance(devices, (ListConfig, list)) or (isinstance(devices, str) and devices != "auto"):
        _check_device_ids(devices, str(trainer.get("accelerator", "auto")))
    elif isinstance(devices, int):
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
    _check_accelerator(trainer.get("accelerator", "auto"))


def validate(cfg: DictConfig) -> None:
    """Check values the schema cannot: ranges, whole numbers, paths, device counts, pairings of keys."""
    from mobilenet_pl.models.mobilenet import MIN_INPUT_SIZE  # torch: not needed to compose a config

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
    from mobilenet_pl.models.weights import read_weights

    pretrained = cfg.model.get("pretrained")
    if isinstance(pretrained, str) and Path(pretrained).expanduser().exists():  # else a tag, checked by the model
        read_weights(pretrained, key="model.pretrained")
    _check_recipe(cfg.recipe, data.batch_size)
    _check_trainer(cfg.trainer)
    for group in ("data", "trainer", "logger"):
        _check_target_keys(group, cfg.get(group))
    _check_callbacks(cfg)
    if cfg.ckpt_path is not None:
        read_weights(str(cfg.ckpt_path), key="ckpt_path", checkpoint=True)


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


def check_device(key: str, value: Any) -> str:
    """``value`` as a torch device this machine has: ``auto`` (cuda where there is a GPU), ``cpu``, ``cuda`` or
    ``cuda:N``; anything else, or a GPU that is not here, is one `ConfigError` naming ``key``."""
    text = str(value)
    if text == "cpu":
        return text
    import torch

    if text == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    kind, colon, index = text.partition(":")
    if text == "cpu":
        return text
    if kind != "cuda" or (colon and not index.isdigit()):
        raise ConfigError(f"{key}={text!r} is not allowed: it must be auto, cpu, cuda or cuda:N")
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count == 0:
        raise ConfigError(f"{key}={text!r} is not allowed: this machine has no CUDA GPU; use {key}=cpu (or auto)")
    if colon and int(index) >= count:
        raise ConfigError(f"{key}={text!r} is not allowed: only {count} GPU(s) here (cuda:0 to cuda:{count - 1})")
    return text


def unknown_name(kind: str, given: str, known: Iterable[str], prefix: str = "") -> str:
    """``unknown key 'widht'; did you mean 'width'?``: the nearest of ``known`` (difflib), else the list of them.

    Example:
        >>> unknown_name("key", "widht", ["width", "seed"])
        "unknown key 'widht'; did you mean 'width'?"
    """
    known = sorted(set(known))
    close = difflib.get_close_matches(given, known, n=3, cutoff=0.7)  # depth is not width (0.6)
    named = f"{prefix}{given}"
    if close:
        return f"unknown {kind} {named!r}; did you mean {' or '.join(repr(prefix + c) for c in close)}?"
    return f"unknown {kind} {named!r}; choose from: {', '.join(prefix + c for c in known)}"


# what a required top-level key (``???`` in conf/<tool>.yaml) holds, for its error line
REQUIRED_VALUE = {"ckpt_path": "PATH.ckpt (a checkpoint written by python -m mobilenet_pl.train)", "sweep_dir": "PATH"}


def check_required(tool: str, cfg: DictConfig) -> None:
    """Every required top-level key is given: checked first, so its line comes before any other complaint."""
    missing = [str(key) for key in cfg if key != "hydra" and OmegaConf.is_missing(cfg, key)]
    if missing:
        key = missing[0]
        raise ConfigError(f"{key} is missing: set {key}={REQUIRED_VALUE.get(key, 'VALUE')}")


def check_known_keys(tool: str, cfg: DictConfig) -> None:
    """A top-level key the tool's schema does not name (``+modle=v1``) would be silently ignored: refuse it."""
    known = {field.name for field in fields(SCHEMAS[tool])} | {"hydra"}
    unknown = [str(key) for key in cfg if key not in known]
    if unknown:
        raise ConfigError(f"{unknown_name('key', unknown[0], known)} (see python -m mobilenet_pl.{tool} --help)")
    for field in fields(SCHEMAS[tool]):  # a typed group (recipe): ``+recipe.typo=1`` was silently ignored
        node = cfg.get(field.name)
        schema = SCHEMA_GROUPS.get(field.name)
        if schema is None or not isinstance(node, DictConfig):
            continue
        names = [f.name for f in fields(schema)]
        extra = [str(key) for key in node if key not in names]
        if extra:
            raise ConfigError(
                f"{field.name}.{extra[0]} is not allowed: {field.name} has no key {extra[0]!r} "
                f"(its keys: {', '.join(names)})"
            )


# What a resumed run may not change, and why (docs/reliability.md has the table of every key)
RESUME_WHY = {
    "model": "the checkpoint's weights are another network's",
    "data": "it would change the data partition: images the checkpoint trained on could land in val or test",
    "labels": "the checkpoint's classifier outputs mean the checkpoint's classes",
}
# hyperparameters a resumed run may change: used, and printed as changed
RESUME_MAY_CHANGE = {
    "label_smoothing": "recipe.label_smoothing",
    "mixup": "recipe.mixup",
    "cutmix": "recipe.cutmix",
    "ema_decay": "recipe.ema_decay",
    "channels_last": "channels_last",
    "compile": "compile",
}


def _model_key(name: str) -> str:
    return "width" if name == "width" else f"model.{name}"


def check_resume_checkpoint(
    key: str, path: str, hparams: Any, datamodule: Any = None, settings: dict[str, Any] | None = None
) -> list[str]:
    """``path`` is a safe training checkpoint of what this run is (``hparams``, ``datamodule``): the same checks
    for ``ckpt_path`` and for the ``last.ckpt`` an auto-resume picks up. Refused in one line naming the key and
    both values: another model (any ``model.*``, ``width``, ``resolution``, classes, channels), another data
    partition (source, root, split fractions, split seed; `ImageDataModule.partition`), other class names.
    Returns the keys that may change and did (``recipe.label_smoothing 0.1 -> 0.2``, and the run ``settings``
    such as ``trainer.max_epochs`` the checkpoint recorded), for the run to print."""
    import torch

    from mobilenet_pl.models.hparams import DATA_KEYS, RUN_SETTINGS_KEY
    from mobilenet_pl.models.weights import describe, read_weights

    saved = read_weights(path, key=key, checkpoint=True).hparams or {}
    ours = {"model": dict(hparams["model"]), **{k: hparams[k] for k in DATA_KEYS}}
    same = all(saved["model"].get(k) == ours["model"].get(k) for k in ("name", "width")) and all(
        saved.get(k) == ours[k] for k in DATA_KEYS
    )
    if not same:
        raise ConfigError(
            f"{key}={path!r} is not allowed: it holds {describe(saved)}; this run builds {describe(ours)}"
        )

    def refuse(config_key: str, new: Any, old: Any, why: str) -> ConfigError:
        return ConfigError(
            f"{key}={path!r} is not allowed: {config_key}={new!r} differs from the checkpoint's {old!r}; "
            f"{RESUME_WHY[why]}. Resume with the checkpoint's value, or start a new run from its weights "
            f"(model.pretrained={path})"
        )

    for name in sorted(set(saved["model"]) | set(ours["model"])):
        if saved["model"].get(name) != ours["model"].get(name):
            raise refuse(_model_key(name), ours["model"].get(name), saved["model"].get(name), "model")
    if saved.get("resolution") is not None and saved.get("resolution") != hparams.get("resolution"):
        raise refuse("resolution", hparams.get("resolution"), saved.get("resolution"), "model")
    if ((saved.get("ema_decay") or 0) > 0) != ((hparams.get("ema_decay") or 0) > 0):  # EMA weights or none
        raise refuse("recipe.ema_decay", hparams.get("ema_decay"), saved.get("ema_decay"), "model")
    old_names, new_names = saved.get("class_names"), hparams.get("class_names")
    if old_names and new_names and list(old_names) != list(new_names):
        first = next((i for i, (a, b) in enumerate(zip(old_names, new_names, strict=False)) if a != b), len(old_names))
        old_name = old_names[first] if first < len(old_names) else None
        new_name = new_names[first] if first < len(new_names) else None
        raise refuse(f"class {first} (the data's class names)", new_name, old_name, "labels")
    raw = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    if datamodule is not None and hasattr(datamodule, "partition"):
        recorded: dict[str, Any] = next(
            (v["partition"] for v in raw.values() if isinstance(v, dict) and isinstance(v.get("partition"), dict)),
            {},
        )
        current = datamodule.partition()
        for name in recorded:  # a checkpoint of an older version recorded none: nothing to compare
            if recorded[name] != current.get(name):
                raise refuse(name, current.get(name), recorded[name], "data")
    changed = [
        f"{config_key} {saved.get(name)!r} -> {hparams.get(name)!r}"
        for name, config_key in RESUME_MAY_CHANGE.items()
        if name in saved and saved.get(name) != hparams.get(name)
    ]
    old_opt, new_opt = saved.get("optimizer"), hparams.get("optimizer")
    if isinstance(old_opt, dict) and isinstance(new_opt, dict) and old_opt.get("lr") != new_opt.get("lr"):
        changed.append(f"optimizer.lr {old_opt.get('lr')!r} -> {new_opt.get('lr')!r}")  # (others are refused)
    run_settings = raw.get(RUN_SETTINGS_KEY) if isinstance(raw.get(RUN_SETTINGS_KEY), dict) else {}
    changed += [
        f"{name} {run_settings[name]!r} -> {value!r}"
        for name, value in (settings or {}).items()
        if name in run_settings and run_settings[name] != value
    ]
    return changed
