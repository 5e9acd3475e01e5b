"""mobilenet_pl: MobileNet V1/V2 backbones, a Lightning module and a Hydra training app.

Every name resolves on first use (PEP 562): ``import mobilenet_pl`` itself imports no third-party package,
so a command (``python -m mobilenet_pl.train``) can check its config before it pays for torch or Lightning.
The backbone names (`create_model`, `MobileNet`, ...) load `mobilenet_pl.models` (torch, timm, torchvision;
it registers our models in timm); the Lightning names (`MobileNetClassifier`, the DataModules) load
`mobilenet_pl.lit`, so backbone-only users never load Lightning. docs/api.md lists what each loads.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from mobilenet_pl._version import __version__

if TYPE_CHECKING:
    from mobilenet_pl.lit import (
        CIFARDataModule,
        DigitsDataModule,
        FakeDataModule,
        ImageDataModule,
        ImageFolderDataModule,
        MobileNetClassifier,
    )
    from mobilenet_pl.models import (
        FeatureInfo,
        MobileNet,
        MobileNetFeatures,
        WeightsFileError,
        create_model,
        from_checkpoint,
        list_models,
        make_divisible,
        mobilenet_v1,
        mobilenet_v2,
        read_weights,
    )
    from mobilenet_pl.models.convert import convert_state_dict, to_foreign_state_dict

# public name -> the module that defines it
_EXPORTS = {
    **dict.fromkeys(
        (
            "FeatureInfo",
            "MobileNet",
            "MobileNetFeatures",
            "WeightsFileError",
            "create_model",
            "from_checkpoint",
            "list_models",
            "make_divisible",
            "mobilenet_v1",
            "mobilenet_v2",
            "read_weights",
        ),
        "mobilenet_pl.models",
    ),
    "convert_state_dict": "mobilenet_pl.models.convert",
    "to_foreign_state_dict": "mobilenet_pl.models.convert",
    **dict.fromkeys(
        (
            "CIFARDataModule",
            "DigitsDataModule",
            "FakeDataModule",
            "ImageDataModule",
            "ImageFolderDataModule",
            "MobileNetClassifier",
        ),
        "mobilenet_pl.lit",
    ),
}

__all__ = [
    "CIFARDataModule",
    "DigitsDataModule",
    "FakeDataModule",
    "FeatureInfo",
    "ImageDataModule",
    "ImageFolderDataModule",
    "MobileNet",
    "MobileNetClassifier",
    "MobileNetFeatures",
    "WeightsFileError",
    "__version__",
    "convert_state_dict",
    "create_model",
    "from_checkpoint",
    "list_models",
    "make_divisible",
    "mobilenet_v1",
    "mobilenet_v2",
    "read_weights",
    "to_foreign_state_dict",
]
assert sorted(__all__) == sorted(["__version__", *_EXPORTS])


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
