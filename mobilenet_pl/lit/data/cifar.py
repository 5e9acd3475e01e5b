"""CIFAR-10/100 through torchvision (downloaded when online, a clear error when not)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Subset
from torchvision.transforms import v2 as T

from mobilenet_pl.lit.data.base import ImageDataModule
from mobilenet_pl.lit.data.sampling import seeded_split


class CIFARDataModule(ImageDataModule):
    """CIFAR-10/100 through torchvision: downloaded into ``root`` when online, a clear error when not.

    45,000/5,000 train/val split of the official training set (seeded); the official test set.
    """

    default_resolution = 32
    small_input = True

    def __init__(
        self,
        *,
        name: str = "cifar10",
        root: str = "data",
        download: bool = True,
        randaugment: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if name not in ("cifar10", "cifar100"):
            raise ValueError(f"data.name must be 'cifar10' or 'cifar100', got {name!r}")
        self.name, self.root, self.download, self.randaugment = name, Path(root).expanduser(), download, randaugment
        self.num_classes = 10 if name == "cifar10" else 100

    def partition(self) -> dict[str, Any]:
        return {**super().partition(), "data.name": self.name}

    def _dataset(self, train: bool, transform: Any) -> Any:
        from torchvision import datasets

        cls = datasets.CIFAR10 if self.name == "cifar10" else datasets.CIFAR100
        try:
            return cls(str(self.root), train=train, transform=transform, download=self.download)
        except Exception as err:  # offline: urllib raises; absent without download: RuntimeError
            raise RuntimeError(
                f"{self.name} is not in data.root={str(self.root)!r} and could not be downloaded "
                f"({err.__class__.__name__}); offline? Put the extracted torchvision {self.name} folder there."
            ) from err

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        mean, std = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
        ops_train: list[Any] = [T.RandomCrop(32, padding=4), T.RandomHorizontalFlip()]
        if self.randaugment:
            from timm.data.auto_augment import rand_augment_transform

            ops_train.append(rand_augment_transform(self.randaugment, {"translate_const": 14}))
        tail = [T.Resize(self.resolution, antialias=True)] if self.resolution != 32 else []
        tail += [T.ToImage(), T.ToDtype(torch.float32, scale=True), T.Normalize(mean, std)]
        full_train = self._dataset(True, T.Compose(ops_train + tail))
        full_eval = self._dataset(True, T.Compose(tail))
        self.class_names = list(full_train.classes)
        val, train = seeded_split(len(full_train), {"CIFAR validation": 0.1}, self.seed)
        self.train_set, self.val_set = Subset(full_train, train), Subset(full_eval, val)
        self.test_set = self._dataset(False, T.Compose(tail))
