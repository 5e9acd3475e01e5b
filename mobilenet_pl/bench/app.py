"""The benchmark's ``app`` section: the real training app end to end against the network alone.

On a generated ImageNet-layout folder of JPEGs (300-500 px a side, like photos), for each
``data.decode_on`` (``workers``: PIL in the DataLoader workers; ``device``: workers read bytes, the batch is
decoded and cropped on the training device), the section measures three speeds in images/s, all at the
benchmark's device, precision, batch size, resolution and channels_last:

- ``network``: our model's training step on a ready-made batch (the ``train`` section's step, with the
  folder's number of classes), timed in alternation like every other section;
- ``app``: ``python -m mobilenet_pl.train data=imagefolder ...`` as a subprocess for ``app_steps`` steps
  (no logger, no test, no validation, no checkpoints), read back from its ``results.json``: the
  steady-state ``train_images_per_s`` after the app's own warm-up steps, and ``data_wait_fraction``;
- ``pipeline``: the app's own training DataLoader (``ImageFolderDataModule``) alone, moved to the device,
  plus the device decoding (``DeviceAugment``) for ``device``: how many images/s the input side can feed.

Ratios are relative to the network: app / network is how close the app gets to the model's own speed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from mobilenet_pl.app.timing import Entry, make_group, median
from mobilenet_pl.bench.step import FAMILIES, LIGHTNING_PRECISION, Config, network_train_samples, quiet_lightning

DECODE_ON = ("workers", "device")
SIDE_RANGE = (300, 500)  # image sides, as ImageNet photos after the usual downscale


def make_imagenet_folder(root: Path, train_images: int, classes: int, val_per_class: int = 1) -> Path:
    """``root/train/cNNN/*.jpg`` and ``root/val/cNNN/*.jpg``: random-texture JPEGs (a coarse random colour
    grid upsampled bilinearly, plus noise: they compress and decode like photos), each side drawn from
    ``SIDE_RANGE``. ``train_images`` are spread over ``classes`` round-robin."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    jobs = [("train", i % classes, i) for i in range(train_images)]
    jobs += [("val", c, i) for c in range(classes) for i in range(val_per_class)]
    for split, label, i in jobs:
        height, width = (int(side) for side in rng.integers(SIDE_RANGE[0], SIDE_RANGE[1] + 1, 2))
        coarse = rng.integers(0, 256, (height // 16 + 1, width // 16 + 1, 3), dtype=np.uint8)
        smooth = np.asarray(
            Image.fromarray(coarse).resize((width, height), Image.Resampling.BILINEAR), dtype=np.float32
        )
        pixels = np.clip(smooth + rng.normal(0, 8, smooth.shape), 0, 255).astype(np.uint8)
        folder = root / split / f"c{label:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(folder / f"{i:05d}.jpg", quality=90)
    return root


def app_command(cfg: Config, root: Path, decode_on: str, run_dir: Path) -> list[str]:
    """The training app's command line for one measured run (what a user would type, plus quiet outputs)."""
    family = "v2" if "v2" in cfg.families else cfg.families[0]
    gpu = cfg.device == "cuda"
    return [
        sys.executable,
        "-m",
        "mobilenet_pl.train",
        f"model={family}",
        f"width={cfg.width}",
        "data=imagefolder",
        f"data.root={root}",
        f"data.batch_size={cfg.batch_size}",
        f"data.num_workers={cfg.app_workers}",
        f"data.decode_on={decode_on}",
        f"resolution={cfg.resolution}",
        f"channels_last={str(cfg.channels_last).lower()}",
        f"compile={str(cfg.compile).lower()}",
        "optimizer=sgd",  # the train section's optimizer
        f"trainer={'gpu' if gpu else 'cpu'}",
        f"trainer.precision={LIGHTNING_PRECISION[cfg.precision]}",
        f"++trainer.max_steps={cfg.app_steps}",  # ++: set whether or not the trainer option has the key
        f"trainer.max_epochs={cfg.app_steps}",  # >= 1 batch an epoch: max_steps ends the run
        "++trainer.limit_val_batches=0",
        "++trainer.enable_checkpointing=false",
        "++trainer.enable_progress_bar=false",
        "~callbacks.checkpoint",
        "~callbacks.last",
        "logger=none",
        "test=false",
        f"hydra.run.dir={run_dir}",
    ]


def run_app(cfg: Config, root: Path, decode_on: str, work: Path) -> dict[str, Any]:
    """One run of the training app; its ``results.json``. Raises with the app's stderr if it fails."""
    run_dir = work / f"run_{decode_on}"
    command = app_command(cfg, root, decode_on, run_dir)
    # the app's intra-op threads: the same as the network row's (DataLoader workers use one each)
    env = {**os.environ, "OMP_NUM_THREADS": str(cfg.threads), "WANDB_MODE": "disabled"}
    proc = subprocess.run(command, cwd=work, env=env, capture_output=True, text=True)
    results = run_dir / "results.json"
    if proc.returncode != 0 or not results.is_file():
        raise RuntimeError(f"app section: the training app failed ({' '.join(command[1:])}):\n{proc.stderr[-3000:]}")
    return json.loads(results.read_text())


def pipeline_images_per_s(cfg: Config, root: Path, decode_on: str, batches: int) -> float:
    """Images/s of the app's training DataLoader alone, each batch moved to the device and, for ``device``,
    decoded and cropped there; the first batch (worker start-up) is not timed, later epochs' restarts are."""
    import lightning as L
    from lightning.fabric.utilities.apply_func import move_data_to_device

    from mobilenet_pl.lit.data import ImageFolderDataModule

    quiet_lightning()

    data = ImageFolderDataModule(
        root=str(root),
        resolution=cfg.resolution,
        batch_size=cfg.batch_size,
        num_workers=cfg.app_workers,
        decode_on=decode_on,
    )
    data.setup("fit")
    # a Trainer on the benchmark's device decides the loader's form, as in the app (nothing is fitted)
    data.trainer = L.Trainer(
        accelerator="gpu" if cfg.device == "cuda" else "cpu", devices=1, logger=False, enable_progress_bar=False
    )
    loader = data.train_dataloader()
    augment = data.device_augment[True] if data.device_augment is not None else None
    device = torch.device(cfg.device)

    def fetch(batch: Any) -> int:
        batch = move_data_to_device(batch, device)
        images, _ = augment(batch) if augment is not None else batch
        return len(images)

    sync = torch.cuda.synchronize if cfg.device == "cuda" else (lambda: None)
    images, seen, started = 0, 0, 0.0
    while seen <= batches:  # epochs, until 1 + batches batches
        for batch in loader:
            count = fetch(batch)
            if seen == 0:
                sync()
                started = time.perf_counter()
            else:
                images += count
            seen += 1
            if seen > batches:
                break
    sync()
    elapsed = time.perf_counter() - started
    del loader  # ends the persistent workers
    return images / elapsed


def bench_app(cfg: Config, notes: list[str]) -> dict[str, Any]:
    """End-to-end training app vs network-only vs pipeline-only images/s, for each ``decode_on``."""
    family = "v2" if "v2" in cfg.families else cfg.families[0]
    entries: dict[str, Entry] = {}
    waits: dict[str, float] = {}
    warmups: dict[str, int] = {}
    with tempfile.TemporaryDirectory(prefix="mobilenet_pl_app_") as tmp:
        work = Path(tmp)
        root = make_imagenet_folder(work / "images", cfg.app_images, cfg.app_classes)
        # the network is timed before and after each app run (the median of all): load that drifts while
        # the app runs once per variant then hits the network row too
        network = network_train_samples(cfg, family, cfg.app_classes)
        for decode_on in DECODE_ON:
            results = run_app(cfg, root, decode_on, work)
            network += network_train_samples(cfg, family, cfg.app_classes)
            entries[f"app {decode_on}"] = Entry(
                f"app end to end, decode_on={decode_on} ({cfg.app_workers} workers, results.json)",
                "ours",
                float(results["train_images_per_s"]),
            )
            waits[decode_on] = float(results["data_wait_fraction"])
            warmups[decode_on] = int(results["train_warmup_steps"])
            pipe = [pipeline_images_per_s(cfg, root, decode_on, cfg.app_steps) for _ in range(cfg.repeats)]
            what = "DataLoader" if decode_on == "workers" else "DataLoader + device decode"
            entries[f"pipeline {decode_on}"] = Entry(
                f"pipeline alone, decode_on={decode_on} ({what}, {cfg.app_workers} workers)",
                "reference",
                median(pipe),
                pipe,
            )
    entries["network"] = Entry(
        f"network only: {FAMILIES[family]} w{cfg.width:g} training step on a ready batch",
        "peer",
        cfg.batch_size / median(network),
        [cfg.batch_size / s for s in network],
    )
    group = make_group("images/s", True, {"network": entries.pop("network"), **entries})
    group["data_wait_fraction"] = waits
    group["app_warmup_steps"] = warmups
    group["images"] = cfg.app_images
    notes.append(
        f"app: {cfg.app_images} generated JPEGs ({SIDE_RANGE[0]}-{SIDE_RANGE[1]} px sides, {cfg.app_classes} "
        f"classes) -> {cfg.resolution}px, batch {cfg.batch_size}; the app runs {cfg.app_steps} steps once per "
        f"decode_on and reports its steady state after its warm-up steps ({warmups}); 'x best peer' is x network"
    )
    return {f"{family} batch {cfg.batch_size}": group}
