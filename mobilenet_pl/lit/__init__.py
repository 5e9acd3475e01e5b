"""The Lightning layer: `MobileNetClassifier` and the DataModules.

Names resolve on first use (PEP 562), so ``import mobilenet_pl.lit`` costs nothing until one is used.
"""

from __future__ import annotations

import importlib
from typing import Any

# public name -> the module that defines it
_EXPORTS = {
    "MobileNetClassifier": "mobilenet_pl.lit.classifier",
    "ImageDataModule": "mobilenet_pl.lit.data.base",
    "DigitsDataModule": "mobilenet_pl.lit.data.digits",
    "ImageFolderDataModule": "mobilenet_pl.lit.data.folder",
    "CIFARDataModule": "mobilenet_pl.lit.data.cifar",
    "FakeDataModule": "mobilenet_pl.lit.data.fake",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
