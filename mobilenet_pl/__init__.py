"""mobilenet_pl: MobileNet V1/V2 backbones, a Lightning module and a Hydra training app.

``import mobilenet_pl`` imports only PyTorch (the backbones); the Lightning names (`MobileNetClassifier`,
the DataModules) are imported on first use (PEP 562), so backbone-only users never load Lightning.
"""

from __future__ import annotations

from typing import Any

from mobilenet_pl._version import __version__
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

_LIGHTNING_NAMES = (
    "CIFARDataModule",
    "DigitsDataModule",
    "FakeDataModule",
    "ImageDataModule",
    "ImageFolderDataModule",
    "MobileNetClassifier",
)

__all__ = [
    "FeatureInfo",
    "MobileNet",
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
    *_LIGHTNING_NAMES,
]


def __getattr__(name: str) -> Any:
    if name in _LIGHTNING_NAMES:
        from mobilenet_pl import lit

        return getattr(lit, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LIGHTNING_NAMES])
