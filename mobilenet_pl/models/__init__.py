"""Pure PyTorch MobileNet V1/V2 backbones (no Lightning, no Hydra)."""

# registers mobilenet_pl_v1_* / mobilenet_pl_v2_* in timm, so timm.create_model finds them after `import mobilenet_pl`
from mobilenet_pl.models import timm_registry  # noqa: F401
from mobilenet_pl.models.checkpoint import from_checkpoint
from mobilenet_pl.models.factory import create_model, mobilenet_v1, mobilenet_v2
from mobilenet_pl.models.layers import ConvBNAct, make_divisible
from mobilenet_pl.models.mobilenet import MIN_INPUT_SIZE, FeatureInfo, MobileNet, MobileNetFeatures
from mobilenet_pl.models.registry import list_models, register_model
from mobilenet_pl.models.weights import Weights, WeightsFileError, read_weights

__all__ = [
    "MIN_INPUT_SIZE",
    "ConvBNAct",
    "FeatureInfo",
    "MobileNet",
    "MobileNetFeatures",
    "Weights",
    "WeightsFileError",
    "create_model",
    "from_checkpoint",
    "list_models",
    "make_divisible",
    "mobilenet_v1",
    "mobilenet_v2",
    "read_weights",
    "register_model",
]
