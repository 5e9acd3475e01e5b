"""Helpers for the app tests: compose configs with Hydra's compose API, run the app in-process."""

from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path

import lightning as L
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict
from PIL import Image

from mobilenet_pl.app.config import config_dir, register_schemas

register_schemas()
CONF = Path(config_dir())
# keep runs tiny: a couple of batches per stage
FAST = [
    "trainer.max_epochs=1",
    "+trainer.limit_train_batches=2",
    "+trainer.limit_val_batches=2",
    "+trainer.limit_test_batches=2",
    "+trainer.enable_progress_bar=false",
]


def compose_train(overrides: list[str], run_dir: Path, config_name: str = "train") -> DictConfig:
    """Compose like ``python -m mobilenet_pl.train OVERRIDES`` would, with the run dir in ``run_dir``."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name, overrides=overrides, return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(run_dir)
        cfg.hydra.job.num = 0
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg


def make_image_folder(
    root: Path, classes: int = 3, per_class: int = 4, splits: tuple[str, ...] = ("train", "val")
) -> Path:
    """A tiny ImageNet-layout folder of generated JPEGs."""
    for split in splits:
        for c in range(classes):
            folder = root / split / f"class_{c}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                color = (60 * c % 255, 90 * i % 255, 120)
                Image.new("RGB", (48, 40), color).save(folder / f"img_{i}.jpg")
    return root


def run_cli(module: str, *args: str, cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess[str]:
    env_args = [sys.executable, "-m", module, *args]
    return subprocess.run(env_args, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False)


class StopAfterEpoch(L.Callback):
    """Ends fit after ``epoch`` as an interruption would (same config, same schedule, last.ckpt saved)."""

    def __init__(self, epoch: int = 0) -> None:
        self.epoch = epoch

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.current_epoch >= self.epoch:
            trainer.should_stop = True


def run_ok(module: str, *args: str, cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess[str]:
    """``run_cli`` that must succeed; a failure shows the end of the command's stderr."""
    proc = run_cli(module, *args, cwd=cwd, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def make_cifar10_folder(root: Path, train_per_batch: int = 10, test: int = 13) -> Path:
    """torchvision's extracted CIFAR-10 layout (cifar-10-batches-py/) with a few random images."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    gen = torch.Generator().manual_seed(0)

    def batch(name: str, n: int) -> None:
        data = torch.randint(0, 256, (n, 3072), generator=gen, dtype=torch.uint8).numpy()
        labels = torch.randint(0, 10, (n,), generator=gen).tolist()
        (folder / name).write_bytes(pickle.dumps({"data": data, "labels": labels}))

    for i in range(1, 6):
        batch(f"data_batch_{i}", train_per_batch)
    batch("test_batch", test)
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": [f"c{i}" for i in range(10)]}))
    return root


def max_weight_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    """Largest absolute difference between two state dicts' floating-point tensors (same keys required)."""
    assert a.keys() == b.keys()
    return max((a[k].double() - b[k].double()).abs().max().item() for k in a if a[k].is_floating_point())


def tiny_checkpoint(path: Path, **module_kwargs: object) -> Path:
    """A 4-class 3-channel V2 0.25 checkpoint at 32 px, written by Lightning after two training steps
    (BatchNorm statistics updated); ``module_kwargs`` go to `MobileNetClassifier`."""
    from torch.utils.data import DataLoader, TensorDataset

    from mobilenet_pl.lit.classifier import MobileNetClassifier

    torch.manual_seed(0)
    module = MobileNetClassifier(
        {"name": "v2", "width": 0.25},
        num_classes=4,
        resolution=32,
        class_names=["w", "x", "y", "z"],
        **module_kwargs,  # type: ignore[arg-type]
    )
    data = TensorDataset(torch.randn(16, 3, 32, 32), torch.randint(0, 4, (16,)))
    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, train_dataloaders=DataLoader(data, batch_size=8))
    trainer.save_checkpoint(path)
    return path
