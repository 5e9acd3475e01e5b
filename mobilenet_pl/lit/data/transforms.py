"""The ImageNet-style PIL transforms of the workers path (``data.decode_on=workers``)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor
from torchvision.transforms import v2 as T

from mobilenet_pl.lit.data.images import IMAGENET_MEAN, IMAGENET_STD


class NormalizedTensor:
    """An 8-bit RGB PIL image as a normalised float32 CHW tensor, ``(x / 255 - mean) / std``.

    The same values as torchvision's ``ToImage, ToDtype(scale=True), Normalize`` (to float rounding) in two
    passes over the pixels instead of four; about 2.5x faster, which is a fifth of a training sample's time.
    """

    def __init__(self, mean: tuple[float, ...] = IMAGENET_MEAN, std: tuple[float, ...] = IMAGENET_STD) -> None:
        self.mean = torch.tensor(mean).view(-1, 1, 1) * 255
        self.inv_std = 1 / (torch.tensor(std).view(-1, 1, 1) * 255)

    def __call__(self, image: Any) -> Tensor:
        pixels = torch.from_numpy(np.array(image)).permute(2, 0, 1)  # HWC uint8 as a CHW view (writable copy)
        out = torch.empty(pixels.shape, dtype=torch.float32)
        out.copy_(pixels)
        return out.sub_(self.mean).mul_(self.inv_std)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(mean={self.mean.flatten().div(255).tolist()})"


def pil_transforms(resolution: int, train: bool, randaugment: str | None = None) -> T.Compose:
    """ImageNet-style transforms: random-resized crop + flip (+ timm RandAugment) or resize + centre crop."""
    if train:
        ops: list[Any] = [T.RandomResizedCrop(resolution, antialias=True), T.RandomHorizontalFlip()]
        if randaugment:
            from timm.data.auto_augment import rand_augment_transform

            ops.append(rand_augment_transform(randaugment, {"translate_const": int(resolution * 0.45)}))
    else:
        ops = [T.Resize(int(resolution * 256 / 224), antialias=True), T.CenterCrop(resolution)]
    return T.Compose([*ops, NormalizedTensor()])
