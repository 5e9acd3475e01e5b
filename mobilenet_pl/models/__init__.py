"""Pure PyTorch MobileNet V1/V2 backbones (no Lightning, no Hydra)."""

from mobilenet_pl.models.checkpoint import from_checkpoint
from mobilenet_pl.models.factory import create_model, list_models, mobilenet_v1, mobilenet_v2, register_model
from mobilenet_pl.models.layers import ConvBNAct, make_divisible
from mobilenet_pl.models.mobilenet import FeatureInfo, MobileNet, MobileNetFeatures

__all__ = [
    "ConvBNAct",
    "FeatureInfo",
    "MobileNet",
    "MobileNetFeatures",
    "create_model",
    "from_checkpoint",
    "list_models",
    "make_divisible",
    "mobilenet_v1",
    "mobilenet_v2",
    "register_model",
]
