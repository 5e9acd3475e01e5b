"""scikit-learn's bundled 8x8 digits: the default data set, offline and small."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset
from torchvision.transforms import v2 as T

from mobilenet_pl.lit.data.base import ImageDataModule
from mobilenet_pl.lit.data.sampling import seeded_split, split_sizes


class LabelledTensors(Dataset[tuple[Tensor, int]]):
    """Images and labels held as tensors; ``int`` labels like torchvision's data sets; optional transform."""

    def __init__(self, images: Tensor, labels: Tensor, transform: Any = None) -> None:
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        image = self.images[index]
        return (self.transform(image) if self.transform else image), int(self.labels[index])


class DigitsDataModule(ImageDataModule):
    """scikit-learn's 8x8 handwritten digits (1,797 images, 10 classes), bundled with scikit-learn.

    Images are upsampled to ``resolution`` once, normalised, and split with a fixed seed into
    train / val / test (``val_fraction``, ``test_fraction``; 360 test images by default). Training
    images get small random shifts and rotations.
    """

    num_classes = 10
    in_chans = 1
    default_resolution = 32
    small_input = True
    size = 1797

    def __init__(
        self, *, val_fraction: float = 0.2, test_fraction: float = 0.2, augment: bool = True, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.fractions = {"data.val_fraction": val_fraction, "data.test_fraction": test_fraction}
        split_sizes(self.size, self.fractions)  # a bad fraction fails here, before any work
        self.augment = augment
        self.class_names = [str(i) for i in range(10)]

    def partition(self) -> dict[str, Any]:
        return {**super().partition(), **self.fractions}

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        from sklearn.datasets import load_digits

        digits = load_digits()
        images = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
        images = F.interpolate(images, size=(self.resolution, self.resolution), mode="bilinear", align_corners=False)
        images = (images - images.mean()) / images.std()
        labels = torch.tensor(digits.target)
        val, test, train = seeded_split(len(labels), self.fractions, self.seed)
        augment = T.RandomAffine(degrees=10, translate=(0.1, 0.1), scale=(0.9, 1.1)) if self.augment else None
        self.train_set = LabelledTensors(images[train], labels[train], augment)
        self.val_set = LabelledTensors(images[val], labels[val])
        self.test_set = LabelledTensors(images[test], labels[test])
