"""Speed benchmark: ``python -m mobilenet_pl.benchmark [family=all] [device=cpu] [sections=[...]] [json=PATH]``.

Measures, in one run, our MobileNets against timm's and torchvision's at the same width: training-step
and inference throughput, batch-1 latency, the Lightning loop's per-step overhead over a plain PyTorch
loop, the input pipeline, and deployed (ONNX Runtime) latency. Contenders are measured in alternation:
every contender is warmed up first, then each repetition times every contender once, in an order that
rotates between repetitions, so drifting machine load hits all of them alike; the median repetition is
reported (`mobilenet_pl.timing`). Ratios are speeds relative to the best peer (> 1: faster than it);
the goals they are held against live in docs/performance.md, not here.

The table is ours, not ``torch.utils.benchmark.Compare``: Compare shows times only, and our blocks mix
throughput (images/s) and latency (ms) and add each contender's speed relative to the best peer.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from mobilenet_pl.app_callbacks import build_callbacks
from mobilenet_pl.bench_app import bench_app
from mobilenet_pl.bench_modes import bench_modes
from mobilenet_pl.bench_step import (
    FAMILIES,
    LABEL_SMOOTHING,
    LIGHTNING_PRECISION,
    LR,
    MODES,
    MOMENTUM,
    WEIGHT_DECAY,
    Config,
    sgd_step,
)
from mobilenet_pl.bench_step import autocast_for as _autocast
from mobilenet_pl.bench_step import make_batch as _batch
from mobilenet_pl.bench_step import prepare as _prepare
from mobilenet_pl.bench_step import quiet_lightning as _quiet_lightning
from mobilenet_pl.bench_step import train_step as _train_step
from mobilenet_pl.config import check_values, config_dir
from mobilenet_pl.errors import ConfigError
from mobilenet_pl.models import create_model
from mobilenet_pl.models.mobilenet import MIN_INPUT_SIZE
from mobilenet_pl.timing import Entry, interleaved, make_group, median
from mobilenet_pl.tool import run_tool

SECTIONS = ("train", "infer", "lightning", "pipeline", "export", "app", "modes")  # run in this order
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
LATENCY_CALLS_PER_STEP = 10  # batch-1 calls are short: time 10 x steps of them per repetition
PIPELINE_IMAGES = 256  # JPEGs generated for the pipeline section (256 x 256, 4 classes)
PIPELINE_WORKERS = 2  # DataLoader workers of the pipeline section's loader rows (at most the CPU count)


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
    """What to call before reading the clock in the Lightning section: CUDA kernels run asynchronously."""
    return torch.cuda.synchronize if device == "cuda" else (lambda: None)


# -- contenders ------------------------------------------------------------------------------------------


@dataclass
class Contender:
    key: str  # "ours", "timm", "torchvision"
    label: str
    build: Callable[[], nn.Module]


def timm_name(family: str, width: float) -> str:
    """timm's registered name for a width, e.g. ``("v2", 0.35) -> "mobilenetv2_035"``."""
    return f"mobilenet{family}_{round(width * 100):03d}"


def contenders(family: str, width: float, num_classes: int = 1000) -> tuple[list[Contender], list[str]]:
    """Ours and the peers that exist at this width, plus notes on the ones that do not."""
    import timm
    import torchvision

    name = FAMILIES[family]
    found = [Contender("ours", f"mobilenet_pl {name} w{width:g}", lambda: create_model(name, width=width))]
    notes: list[str] = []
    tname = timm_name(family, width)
    if timm.is_model(tname):
        # drop_rate 0.2 as ours and torchvision's: the same work per step
        found.append(Contender("timm", f"timm {tname}", lambda: timm.create_model(tname, drop_rate=0.2)))
    else:
        notes.append(f"{family}: timm has no {tname} (width {width:g}); no timm peer")
    if family == "v2":
        found.append(
            Contender(
                "torchvision",
                f"torchvision mobilenet_v2(width_mult={width:g})",
                lambda: torchvision.models.mobilenet_v2(width_mult=width, num_classes=num_classes),
            )
        )
    else:
        notes.append("v1: torchvision has no MobileNetV1; no torchvision peer")
    return found, notes


def _infer_call(model: nn.Module, cfg: Config, x: torch.Tensor) -> Callable[[], None]:
    @torch.inference_mode()
    def call() -> None:
        with _autocast(cfg):
            model(x)

    return call


# -- sections --------------------------------------------------------------------------------------------


def bench_train(cfg: Config, notes: list[str]) -> dict[str, Any]:
    """Training-step throughput (images/s) per family: ours vs timm vs torchvision."""
    out: dict[str, Any] = {}
    for family in cfg.families:
        found, family_notes = contenders(family, cfg.width)
        notes.extend(n for n in family_notes if n not in notes)
        batch = _batch(cfg, cfg.batch_size)
        steps = {c.key: _train_step(_prepare(c.build().train(), cfg), cfg, batch) for c in found}
        samples = interleaved(steps, cfg.steps, cfg.repeats, cfg.warmup)
        entries = {
            c.key: Entry(
                c.label, c.key, cfg.batch_size / median(samples[c.key]), [cfg.batch_size / s for s in samples[c.key]]
            )
            for c in found
        }
        out[family] = make_group("images/s", True, entries)
        del steps
    return out


def bench_infer(cfg: Config, notes: list[str]) -> dict[str, Any]:
    """Inference latency at batch 1 (ms) and throughput at ``infer_batch`` (images/s) per family."""
    out: dict[str, Any] = {}
    for family in cfg.families:
        found, family_notes = contenders(family, cfg.width)
        notes.extend(n for n in family_notes if n not in notes)
        models = {c.key: _prepare(c.build().eval(), cfg) for c in found}
        x1, _ = _batch(cfg, 1)
        xb, _ = _batch(cfg, cfg.infer_batch)
        lat = interleaved(
            {k: _infer_call(m, cfg, x1) for k, m in models.items()},
            cfg.steps * LATENCY_CALLS_PER_STEP,
            cfg.repeats,
            cfg.warmup * LATENCY_CALLS_PER_STEP,
        )
        thr = interleaved({k: _infer_call(m, cfg, xb) for k, m in models.items()}, cfg.steps, cfg.repeats, cfg.warmup)
        out[f"{family} batch 1"] = make_group(
            "ms",
            False,
            {c.key: Entry(c.label, c.key, 1e3 * median(lat[c.key]), [1e3 * s for s in lat[c.key]]) for c in found},
        )
        n = cfg.infer_batch
        out[f"{family} batch {n}"] = make_group(
            "images/s",
            True,
            {c.key: Entry(c.label, c.key, n / median(thr[c.key]), [n / s for s in thr[c.key]]) for c in found},
        )
    return out


class InMemoryBatches:
    """Ready-made batches as one iterable: Lightning would take a plain list for a list of loaders."""

    def __init__(self, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        self.batches = batches

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


def bench_lightning(cfg: Config, notes: list[str]) -> dict[str, Any]:
    """ms per training step of the training app's Lightning set-up vs a plain loop: same module, optimizer
    and batches.

    The Trainer runs as ``python -m mobilenet_pl.train`` sets it up: the app's callbacks
    (``conf/callbacks/default.yaml``: reseeding, NaN guard, throughput, SIGTERM checkpoint, ...), the
    progress bar, a logger (CSV, standing in for the default W&B one) and the app's ``log_every_n_steps``.
    Each repetition runs 1 + n steps in each loop, n = ``steps`` but at least ``log_every_n_steps`` (so the
    periodic logging and NaN check fall in the window), and times the last n (from the end of the first step
    to the end of the last, so Trainer start-up and the first step's warm-up are not counted, and everything
    between steps -- batch fetching, hooks, logging -- is).
    """
    import lightning as L
    from lightning.pytorch.loggers import CSVLogger

    from mobilenet_pl.lit.classifier import MobileNetClassifier

    class StepClock(L.Callback):
        def __init__(self, sync: Callable[[], None]) -> None:
            self.sync, self.stamps = sync, []  # type: ignore[var-annotated]

        def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
            self.sync()
            self.stamps.append(clock())

    family = "v2" if "v2" in cfg.families else cfg.families[0]
    sync = sync_fn(cfg.device)
    # on the CPU the process's CPU time: what the loop costs, and the other jobs on a shared machine do not count
    # (their load moved single wall-time repetitions by +-20%); on an accelerator wall time, which is what idles it
    clock = time.process_time if cfg.device == "cpu" else time.perf_counter
    module = MobileNetClassifier(
        model={"name": family, "width": cfg.width},
        num_classes=1000,
        resolution=cfg.resolution,
        optimizer={
            "name": "sgd",
            "lr": LR,
            "momentum": MOMENTUM,
            "weight_decay": WEIGHT_DECAY,
        },
        scheduler=None,  # constant lr: no scheduler step in either loop
        label_smoothing=LABEL_SMOOTHING,
        channels_last=cfg.channels_last,
        compile=cfg.compile,
    ).to(cfg.device)
    module.configure_model()  # channels_last / compile, as the Trainer would; done once for both loops
    trainer_conf = OmegaConf.load(Path(config_dir()) / "trainer" / "default.yaml")
    steps = max(cfg.steps, int(trainer_conf.log_every_n_steps))
    generator = torch.Generator().manual_seed(0)
    batches = InMemoryBatches(
        [
            (
                torch.randn(cfg.batch_size, 3, cfg.resolution, cfg.resolution, generator=generator).to(cfg.device),
                torch.randint(0, 1000, (cfg.batch_size,), generator=generator).to(cfg.device),
            )
            for _ in range(steps + 1)
        ]
    )

    def plain() -> float:
        module.to(cfg.device)  # Lightning's teardown moves the module to the CPU after every fit
        module.train()
        # the same SGD and parameter groups as in the Trainer
        step = sgd_step(module, cfg, module.configure_optimizers(), label_smoothing=LABEL_SMOOTHING)
        stamps = []
        for x, y in batches:
            step(x, y)
            sync()
            stamps.append(clock())
        return (stamps[-1] - stamps[0]) / steps

    def lightning() -> float:
        clock = StepClock(sync)
        with tempfile.TemporaryDirectory(prefix="mobilenet_pl_lightning_") as run_dir:
            trainer = L.Trainer(
                accelerator="gpu" if cfg.device == "cuda" else "cpu",
                devices=1,
                precision=LIGHTNING_PRECISION[cfg.precision],  # type: ignore[arg-type]
                max_epochs=1,
                logger=CSVLogger(run_dir),
                enable_progress_bar=True,
                enable_model_summary=False,
                num_sanity_val_steps=0,
                limit_val_batches=0,
                log_every_n_steps=int(trainer_conf.log_every_n_steps),
                callbacks=[*_app_callbacks(run_dir), clock],
                default_root_dir=run_dir,
            )
            with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):  # the bar: not in the report
                trainer.fit(module, train_dataloaders=batches)
        return (clock.stamps[-1] - clock.stamps[0]) / steps

    _quiet_lightning()
    for run in (plain, lightning):  # warm-up: allocator, compilation, Lightning's first-fit imports
        for _ in range(min(cfg.warmup, 1)):
            run()
    samples: dict[str, list[float]] = {"plain": [], "lightning": []}
    for rep in range(cfg.repeats):
        order = [("plain", plain), ("lightning", lightning)]
        for key, run in order if rep % 2 == 0 else order[::-1]:
            samples[key].append(run())
    entries = {
        "plain": Entry(f"plain PyTorch loop ({FAMILIES[family]} w{cfg.width:g})", "peer", 0.0),
        "lightning": Entry(
            f"Lightning Trainer, the app's callbacks, bar, logger ({FAMILIES[family]} w{cfg.width:g})", "ours", 0.0
        ),
    }
    for key, entry in entries.items():
        entry.samples = [1e3 * s for s in samples[key]]
        entry.value = median(entry.samples)
    group = make_group("ms/step", False, entries)
    group["overhead"] = entries["lightning"].value / entries["plain"].value - 1.0
    group["batch_size"] = cfg.batch_size
    group["steps"] = steps
    notes.append(
        f"lightning: {steps} steps per repetition; "
        + ("CPU time of the process (not wall time)" if cfg.device == "cpu" else "wall time")
    )
    return {family: group}


def _app_callbacks(run_dir: str) -> list[Any]:
    """The training app's callbacks (``conf/callbacks/default.yaml``), checkpoints into ``run_dir``."""
    conf = OmegaConf.create({"seed": 0, "callbacks": OmegaConf.load(Path(config_dir()) / "callbacks" / "default.yaml")})
    return list(build_callbacks(conf.callbacks, Path(run_dir), with_logger=True).values())


def make_jpeg_folder(root: Path, count: int = PIPELINE_IMAGES, size: int = 256, classes: int = 4) -> Path:
    """An ImageFolder of ``count`` random ``size`` x ``size`` JPEGs (smooth gradients plus noise, so they
    compress and decode like photos rather than like pure noise)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    ramp = np.linspace(0, 1, size, dtype=np.float32)
    for i in range(count):
        folder = root / f"class_{i % classes}"
        folder.mkdir(parents=True, exist_ok=True)
        colour = rng.uniform(0, 255, (2, 3)).astype(np.float32)
        image = colour[0] * ramp[:, None, None] + colour[1] * ramp[None, :, None] / 2
        image = image + rng.normal(0, 12, (size, size, 3))
        Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(folder / f"{i:04d}.jpg", quality=90)
    return root


def _seeded_sample(dataset: Any) -> Callable[[], None]:
    """A call that draws the next training sample of a ``SeededSamples`` as the app's sampler does, by (epoch, index)."""
    cursor = iter(range(sys.maxsize))

    def call() -> None:
        dataset[(0, next(cursor) % len(dataset))]

    return call


def _loader_pass(loader: Any) -> Callable[[], None]:
    """A call that runs one full pass of ``loader`` (persistent workers: no start-up after the first)."""

    def call() -> None:
        for _ in loader:
            pass

    return call


def _image_loader(dataset: Any) -> Callable[[], None]:
    """A call that decodes and transforms the next image of ``dataset``, cycling through it."""
    cursor = iter(range(sys.maxsize))

    def call() -> None:
        dataset[next(cursor) % len(dataset)]

    return call


def bench_pipeline(cfg: Config, notes: list[str]) -> dict[str, Any]:
    """Decode + augment throughput (images/s per worker) of the app's image-folder data path against timm's
    ``create_transform`` on torchvision's ``ImageFolder``, on the same files at the same output size.

    Ours is what training and evaluation really run: ``ImageFolderDataModule``'s datasets (``load_rgb``'s
    checks, per-sample seeding in training). Groups ``train`` and ``eval`` time one process with one thread,
    what one DataLoader worker delivers; ``N workers`` times whole training passes of N-worker DataLoaders
    (persistent workers; batching and inter-process transfer included) and divides by N.
    """
    from timm.data import create_transform
    from torch.utils.data import DataLoader
    from torchvision.datasets import ImageFolder

    from mobilenet_pl.lit.data import ImageFolderDataModule

    images = max(64, min(PIPELINE_IMAGES, cfg.steps * cfg.batch_size))  # >= 64: a timing window of ~0.1 s
    workers = min(PIPELINE_WORKERS, os.cpu_count() or 1)
    out: dict[str, Any] = {}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a DataLoader worker runs with one intra-op thread
    try:
        with tempfile.TemporaryDirectory(prefix="mobilenet_pl_jpegs_") as tmp:
            train_dir = make_jpeg_folder(Path(tmp) / "train")
            (Path(tmp) / "val").symlink_to(train_dir)  # the same files for evaluation
            data = ImageFolderDataModule(
                root=tmp, resolution=cfg.resolution, batch_size=cfg.batch_size, num_workers=workers, decode_on="workers"
            )
            data.setup("fit")
            timm_train = ImageFolder(
                str(train_dir),
                create_transform(cfg.resolution, is_training=True, color_jitter=None),  # type: ignore[arg-type]
            )
            timm_eval = ImageFolder(str(train_dir), create_transform(cfg.resolution, is_training=False))
            labels = {
                "ours": "mobilenet_pl ImageFolderDataModule{}",
                # no colour jitter: the same work as ours (random-resized crop, flip, normalise)
                "timm": "timm create_transform(is_training={}{}), ImageFolder",
            }
            per_process = {
                "train": {
                    "ours": (
                        labels["ours"].format(" (seeded samples)"),
                        _seeded_sample(data.train_dataloader().dataset),
                    ),
                    "timm": (labels["timm"].format(True, ", color_jitter=None"), _image_loader(timm_train)),
                },
                "eval": {
                    "ours": (labels["ours"].format(""), _image_loader(data.val_set)),
                    "timm": (labels["timm"].format(False, ""), _image_loader(timm_eval)),
                },
            }
            for split, variants in per_process.items():
                samples = interleaved({k: call for k, (_, call) in variants.items()}, images, cfg.repeats, 8)
                out[split] = make_group(
                    "images/s/worker",
                    True,
                    {
                        k: Entry(label, k, 1 / median(samples[k]), [1 / s for s in samples[k]])
                        for k, (label, _) in variants.items()
                    },
                )
            loaders = {
                "ours": data.train_dataloader(),  # the app's: EpochSampler, SeededSamples, drop_last
                "timm": DataLoader(
                    timm_train,
                    cfg.batch_size,
                    shuffle=True,
                    num_workers=workers,
                    persistent_workers=True,
                    drop_last=True,
                ),
            }
            passes = {key: _loader_pass(loader) for key, loader in loaders.items()}
            samples = interleaved(passes, 1, cfg.repeats, 1)
            per_worker = len(loaders["ours"]) * cfg.batch_size / workers  # both loaders drop the same last batch
            out[f"{workers} worker{'s' if workers > 1 else ''}"] = make_group(
                "images/s/worker",
                True,
                {
                    k: Entry(
                        f"{per_process['train'][k][0]}, DataLoader, training",
                        k,
                        per_worker / median(samples[k]),
                        [per_worker / s for s in samples[k]],
                    )
                    for k in loaders
                },
            )
            del loaders, passes
    finally:
        torch.set_num_threads(threads)
    notes.append(
        f"pipeline: {PIPELINE_IMAGES} generated 256x256 JPEGs -> {cfg.resolution}px; one process with one thread, "
        f"and DataLoaders with {workers} workers, batch {cfg.batch_size}"
    )
    return out


def bench_export(cfg: Config, notes: list[str]) -> dict[str, Any]:
    """Batch-1 latency (ms) of BN-folded ONNX exports in onnxruntime vs eager PyTorch, on the CPU in fp32."""
    from mobilenet_pl.deploy import export_onnx, ort_call, ort_session, quantize_onnx

    out: dict[str, Any] = {}
    x = torch.randn(1, 3, cfg.resolution, cfg.resolution, generator=torch.Generator().manual_seed(0))
    feed = {"input": x.numpy()}
    with tempfile.TemporaryDirectory(prefix="mobilenet_pl_export_") as tmp:
        for family in cfg.families:
            found, _ = contenders(family, cfg.width)
            runners: dict[str, Callable[[], Any]] = {}
            labels: dict[str, tuple[str, str]] = {}
            for c in found:
                model = c.build().eval()
                path = export_onnx(model, Path(tmp) / f"{family}_{c.key}.onnx", cfg.resolution)
                session = ort_session(path)
                runners[f"{c.key} onnx"] = ort_call(session, feed)
                labels[f"{c.key} onnx"] = (f"{c.label}, ONNX fp32 in onnxruntime", c.key)
                if c.key == "ours":
                    calib = [torch.randn(1, 3, cfg.resolution, cfg.resolution).numpy() for _ in range(4)]
                    int8 = quantize_onnx(path, Path(tmp) / f"{family}_ours_int8.onnx", calib)
                    int8_session = ort_session(int8)
                    runners["ours int8"] = ort_call(int8_session, feed)
                    labels["ours int8"] = (f"{c.label}, ONNX int8 in onnxruntime (latency only)", "reference")
                runners[f"{c.key} eager"] = _infer_call(model, _cpu_fp32(cfg), x)
                labels[f"{c.key} eager"] = (f"{c.label}, eager PyTorch fp32", "reference")
            calls = cfg.steps * LATENCY_CALLS_PER_STEP
            samples = interleaved(runners, calls, cfg.repeats, cfg.warmup * LATENCY_CALLS_PER_STEP)
            entries = {
                key: Entry(labels[key][0], labels[key][1], 1e3 * median(samples[key]), [1e3 * s for s in samples[key]])
                for key in runners
            }
            out[f"{family} batch 1"] = make_group("ms", False, entries)
    notes.append(
        "export: CPU, fp32, batch 1, onnxruntime with as many threads as torch; "
        "the int8 row is calibrated on random data (latency only, see python -m mobilenet_pl.quantize for accuracy)"
    )
    return out


def _cpu_fp32(cfg: Config) -> Config:
    return Config(**{**asdict(cfg), "device": "cpu", "precision": "fp32", "channels_last": False, "compile": False})


BENCHES: dict[str, Callable[[Config, list[str]], dict[str, Any]]] = {
    "train": bench_train,
    "infer": bench_infer,
    "lightning": bench_lightning,
    "pipeline": bench_pipeline,
    "export": bench_export,
    "app": bench_app,
    "modes": bench_modes,
}

# -- report ----------------------------------------------------------------------------------------------


def environment(cfg: Config) -> dict[str, Any]:
    """Hardware and library versions (``torch.utils.collect_env``), so a result file says what it measured."""
    import timm
    import torchvision
    from torch.utils.collect_env import get_env_info

    info = get_env_info()._asdict()
    cpu_lines = str(info.get("cpu_info") or "").splitlines()
    cpu = next((line.split(":", 1)[1].strip() for line in cpu_lines if line.startswith("Model name")), None)
    env: dict[str, Any] = {
        "cpu": cpu or info["python_platform"],
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "timm": timm.__version__,
        "torchvision": torchvision.__version__,
        "gpu": torch.cuda.get_device_name() if cfg.device == "cuda" else None,
        "collect_env": {key: value for key, value in info.items() if key not in ("pip_packages", "conda_packages")},
    }
    try:
        import onnxruntime

        env["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        env["onnxruntime"] = None
    return env


def format_table(results: dict[str, Any]) -> str:
    lines = [f"{'section':<10}{'group':<14}{'contender':<76}{'value':>12} {'unit':<16}{'x best peer':>11}"]
    for section, groups in results.items():
        for name, group in groups.items():
            best = group["best_peer"]
            for key, entry in group["entries"].items():
                ratio = entry["ratio_to_best_peer"]
                mark = " (best peer)" if key == best else ""
                lines.append(
                    f"{section:<10}{name:<14}{entry['label'] + mark:<76}{entry['value']:>12.2f} {group['unit']:<16}"
                    f"{'-' if ratio is None else f'{ratio:.2f}x':>11}"
                )
            if "overhead" in group:
                lines.append(
                    f"{section:<10}{name:<14}{'Lightning overhead over the plain loop':<76}{100 * group['overhead']:>11.1f}%"
                )
            for decode_on, wait in group.get("data_wait_fraction", {}).items():
                what = f"app decode_on={decode_on}: share of step time waiting for data"
                lines.append(f"{section:<10}{name:<14}{what:<76}{100 * wait:>11.1f}%")
            for mode, check in group.get("loss_check", {}).items():
                if not isinstance(check, dict):
                    continue  # the reference loss
                what = (
                    f"{mode}: rel. error of 1st loss, update vs float64; first {len(check['losses'])} steps "
                    f"{check['first_steps_s']:.1f} s"
                )
                verdict = "correct" if check["correct"] else "WRONG"
                diffs = f"{check['loss_rel_error']:.1e}, {check['update_rel_error']:.1e}"
                lines.append(f"{section:<10}{name:<14}{what:<76}{diffs:>17} {verdict}")
    return "\n".join(lines)


def run(cfg: Config) -> dict[str, Any]:
    """Run the selected sections; returns everything that goes into the JSON file."""
    if cfg.device == "cuda":
        torch.backends.cudnn.benchmark = True  # for every contender alike
    notes: list[str] = []
    results: dict[str, Any] = {}
    started = time.perf_counter()
    threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    try:
        for section in SECTIONS:
            if section in cfg.sections:
                section_start = time.perf_counter()
                results[section] = BENCHES[section](cfg, notes)
                print(f"[{section}: {time.perf_counter() - section_start:.0f} s]", file=sys.stderr, flush=True)
        env = environment(cfg)
    finally:
        torch.set_num_threads(threads)
    return {
        "config": asdict(cfg),
        "environment": env,
        "results": results,
        "notes": notes,
        "wall_time_s": time.perf_counter() - started,
    }


def benchmark(dcfg: DictConfig) -> None:
    cfg = settings(dcfg)
    report = run(cfg)
    env = report["environment"]
    hardware = env["gpu"] or f"{env['cpu']} ({env['cpu_count']} cores, {env['torch_threads']} torch threads)"
    print(
        f"mobilenet_pl benchmark on {hardware}: width {cfg.width:g}, resolution {cfg.resolution}, batch {cfg.batch_size}, "
        f"{cfg.device} {cfg.precision}, channels_last={cfg.channels_last}, compile={cfg.compile}, "
        f"median of {cfg.repeats} interleaved repetitions x {cfg.steps} steps"
    )
    print(format_table(report["results"]))
    for note in report["notes"]:
        print(f"note: {note}")
    if cfg.json:
        Path(cfg.json).parent.mkdir(parents=True, exist_ok=True)
        # whole or not at all: a run stopped while writing (a time limit's SIGINT) leaves no half a file
        partial = Path(f"{cfg.json}.partial")
        partial.write_text(json.dumps(report, indent=2))
        partial.replace(cfg.json)
        print(f"results: {cfg.json}")


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m mobilenet_pl.benchmark`` and the ``mobilenet-pl-benchmark`` console script."""
    return run_tool("benchmark", benchmark, argv)


if __name__ == "__main__":
    sys.exit(main())
