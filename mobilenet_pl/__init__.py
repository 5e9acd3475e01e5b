"""mobilenet_pl: MobileNet V1/V2 backbones, a Lightning module and a Hydra training app."""

from mobilenet_pl.models import (
    FeatureInfo,
    MobileNet,
    MobileNetFeatures,
    create_model,
    list_models,
    make_divisible,
    mobilenet_v1,
    mobilenet_v2,
)
from mobilenet_pl.models.convert import convert_state_dict

__version__ = "0.1.0"

__all__ = [
    "FeatureInfo",
    "MobileNet",
    "MobileNetFeatures",
    "__version__",
    "convert_state_dict",
    "create_model",
    "list_models",
    "make_divisible",
    "mobilenet_v1",
    "mobilenet_v2",
]
