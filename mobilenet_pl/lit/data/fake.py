"""torchvision's FakeData: random images, for smoke tests and benchmarks."""

from __future__ import annotations

from typing import Any

import torch
from torchvision.transforms import v2 as T

from mobilenet_pl.lit.data.base import ImageDataModule


class FakeDataModule(ImageDataModule):
    """torchvision FakeData: random images of a fixed size, for smoke tests and benchmarks."""

    default_resolution = 64

    def __init__(
        self,
        *,
        num_classes: int = 10,
        in_chans: int = 3,
        train_size: int = 256,
        val_size: int = 64,
        test_size: int = 64,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.num_classes, self.in_chans = num_classes, in_chans
        self.sizes = (train_size, val_size, test_size)
        self.class_names = [f"class_{i}" for i in range(num_classes)]

    def partition(self) -> dict[str, Any]:
        sizes = dict(zip(("data.train_size", "data.val_size", "data.test_size"), self.sizes, strict=True))
        return {**super().partition(), **sizes}

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        from torchvision.datasets import FakeData

        to_tensor = T.Compose([T.ToImage(), T.ToDtype(torch.float32, scale=True)])
        shape = (self.in_chans, self.resolution, self.resolution)
        self.train_set, self.val_set, self.test_set = (
            FakeData(size, shape, self.num_classes, transform=to_tensor, random_offset=offset)
            for size, offset in zip(self.sizes, (0, 10**6, 2 * 10**6), strict=True)
        )
