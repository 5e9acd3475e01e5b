"""The input pipeline: decode + augment throughput of the app's image-folder path vs timm's ``create_transform``."""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from mobilenet_pl.app.timing import Entry, interleaved, make_group, median
from mobilenet_pl.bench.step import Config

PIPELINE_IMAGES = 256  # JPEGs generated for the pipeline section (256 x 256, 4 classes)
PIPELINE_WORKERS = 2  # DataLoader workers of the pipeline section's loader rows (at most the CPU count)


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
