"""The Lightning loop's per-step overhead over a plain PyTorch loop: same module, optimizer and batches."""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

from mobilenet_pl.app.callbacks import build_callbacks
from mobilenet_pl.app.config import config_dir
from mobilenet_pl.app.timing import Entry, make_group, median
from mobilenet_pl.bench.settings import sync_fn
from mobilenet_pl.bench.step import (
    FAMILIES,
    LABEL_SMOOTHING,
    LIGHTNING_PRECISION,
    LR,
    MOMENTUM,
    WEIGHT_DECAY,
    Config,
    quiet_lightning,
    sgd_step,
)


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
                callbacks=[*app_callbacks(run_dir), clock],
                default_root_dir=run_dir,
            )
            with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):  # the bar: not in the report
                trainer.fit(module, train_dataloaders=batches)
        return (clock.stamps[-1] - clock.stamps[0]) / steps

    quiet_lightning()
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


def app_callbacks(run_dir: str) -> list[Any]:
    """The training app's callbacks (``conf/callbacks/default.yaml``), checkpoints into ``run_dir``."""
    conf = OmegaConf.create({"seed": 0, "callbacks": OmegaConf.load(Path(config_dir()) / "callbacks" / "default.yaml")})
    return list(build_callbacks(conf.callbacks, Path(run_dir), with_logger=True).values())
