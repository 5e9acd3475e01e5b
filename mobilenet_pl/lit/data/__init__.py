"""The DataModules, one module per data source, and what they share.

=================  ==========================================================================================
``digits``         `DigitsDataModule`: scikit-learn's bundled 8x8 digits (the default, offline)
``folder``         `ImageFolderDataModule`, `ImageFolderSplit`: ImageNet-style folders, unreadable-file rules
``cifar``          `CIFARDataModule`: CIFAR-10/100 through torchvision
``fake``           `FakeDataModule`: torchvision's FakeData, for smoke tests and benchmarks
``base``           `ImageDataModule`: the loaders, DDP sharding and the sampler's position in checkpoints
``sampling``       `EvalShard`, `EpochSampler`, `SeededSamples`, split helpers: exact DDP evaluation and resume
``transforms``     `pil_transforms`, `NormalizedTensor`: the workers path's ImageNet transforms
``images``         `load_rgb` and the constants both decode paths share (`IMAGENET_MEAN`, `IGNORE_INDEX`, ...)
``device_decode``  JPEG decoding and augmentation on the training device (``data.decode_on=device``)
``eval_checks``    the memo of checked evaluation folders (why it exists and what it does not cover: there)
=================  ==========================================================================================

Every name below is importable from here (``mobilenet_pl.lit.data.ImageFolderDataModule``, as the config
group ``conf/data`` names them); each resolves on first use (PEP 562), so importing one DataModule does
not import the others' dependencies.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mobilenet_pl.lit.data.base import ImageDataModule
    from mobilenet_pl.lit.data.cifar import CIFARDataModule
    from mobilenet_pl.lit.data.digits import DigitsDataModule, LabelledTensors
    from mobilenet_pl.lit.data.fake import FakeDataModule
    from mobilenet_pl.lit.data.folder import CorruptImageError, ImageFolderDataModule, ImageFolderSplit
    from mobilenet_pl.lit.data.images import (
        IGNORE_INDEX,
        IMAGENET_MEAN,
        IMAGENET_STD,
        UnreadableImage,
        display_name,
        load_rgb,
    )
    from mobilenet_pl.lit.data.sampling import EpochSampler, EvalShard, SeededSamples, seeded_split, split_sizes
    from mobilenet_pl.lit.data.transforms import NormalizedTensor, pil_transforms

# public name -> the module that defines it
_EXPORTS = {
    "ImageDataModule": "base",
    "CIFARDataModule": "cifar",
    "DigitsDataModule": "digits",
    "LabelledTensors": "digits",
    "FakeDataModule": "fake",
    "CorruptImageError": "folder",
    "ImageFolderDataModule": "folder",
    "ImageFolderSplit": "folder",
    "IGNORE_INDEX": "images",
    "IMAGENET_MEAN": "images",
    "IMAGENET_STD": "images",
    "UnreadableImage": "images",
    "display_name": "images",
    "load_rgb": "images",
    "EpochSampler": "sampling",
    "EvalShard": "sampling",
    "SeededSamples": "sampling",
    "seeded_split": "sampling",
    "split_sizes": "sampling",
    "NormalizedTensor": "transforms",
    "pil_transforms": "transforms",
}

__all__ = [
    "IGNORE_INDEX",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "CIFARDataModule",
    "CorruptImageError",
    "DigitsDataModule",
    "EpochSampler",
    "EvalShard",
    "FakeDataModule",
    "ImageDataModule",
    "ImageFolderDataModule",
    "ImageFolderSplit",
    "LabelledTensors",
    "NormalizedTensor",
    "SeededSamples",
    "UnreadableImage",
    "display_name",
    "load_rgb",
    "pil_transforms",
    "seeded_split",
    "split_sizes",
]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
