"""BatchNorm folding: the exported graph is conv -> activation only (eval-mode outputs unchanged)."""

from __future__ import annotations

import copy

from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from mobilenet_pl.models.layers import ConvBNAct


def _fuse(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    # torch's fuse_conv_bn_eval folds in float32; against a float64 reference its outputs differ by
    # 5.4e-7 (MobileNetV2 1.0, batch 8 at 224 px), as close as a float64 fold (4.8e-7): no need for our own.
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError("cannot fold a BatchNorm2d without running statistics (track_running_stats=False)")
    return fuse_conv_bn_eval(conv, bn)


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """A copy of ``model`` in eval mode with every BatchNorm folded into the conv before it.

    Covers every `ConvBNAct` (``conv`` gets a bias, ``bn`` becomes ``nn.Identity``) and any
    ``nn.Sequential`` holding a Conv2d directly followed by a BatchNorm2d (torchvision's
    ``Conv2dNormActivation``), so peers can be exported the same way. Eval-mode outputs are unchanged up
    to float rounding; ``model`` itself is not modified. The copy's state dict has no ``bn`` keys, so it
    is for inference and export, not for further training.

    Example:
        >>> import torch
        >>> from mobilenet_pl import mobilenet_v2
        >>> model = mobilenet_v2(width=0.5, num_classes=10).eval()
        >>> folded = fold_batchnorm(model)
        >>> x = torch.randn(2, 3, 64, 64)
        >>> bool(torch.allclose(model(x), folded(x), atol=1e-5))
        True
        >>> any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
        False
    """
    folded = copy.deepcopy(model).eval()
    for module in list(folded.modules()):  # a list: children are replaced while walking
        if isinstance(module, ConvBNAct) and isinstance(module.bn, nn.BatchNorm2d):
            module.conv = _fuse(module.conv, module.bn)
            module.bn = nn.Identity()  # type: ignore[assignment]
        elif isinstance(module, nn.Sequential):
            for i in range(len(module) - 1):
                conv, bn = module[i], module[i + 1]
                if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                    module[i], module[i + 1] = _fuse(conv, bn), nn.Identity()
    return folded
