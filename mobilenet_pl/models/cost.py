"""Parameters and mult-adds, in total and per layer type, as in the V1 paper's Table 2.

Mult-adds are measured by running the model under ``torch.utils.flop_counter.FlopCounterMode``
(which reports FLOPs = 2 x mult-adds for convolutions and matmuls); nothing is derived by formula
except the 1/N + 1/Dk^2 prediction printed next to the measured separable-vs-standard ratio.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from mobilenet_pl.models.blocks import DepthwiseSeparable, InvertedResidual
from mobilenet_pl.models.layers import ConvBNAct

# Rows of the V1 paper's Table 2 ("Resource per layer type"), plus BatchNorm which the paper leaves out.
LAYER_TYPES = ("conv 1x1", "depthwise 3x3", "full conv 3x3", "fc", "batchnorm")

# The papers' published costs: (model, width, resolution) -> (M mult-adds, M params, ImageNet top-1).
PAPER_COSTS: dict[tuple[str, float, int], tuple[float, float, float]] = {
    ("mobilenet_v1", 1.0, 224): (569, 4.2, 70.6),
    ("mobilenet_v1", 0.75, 224): (325, 2.6, 68.4),
    ("mobilenet_v1", 0.5, 224): (149, 1.3, 63.7),
    ("mobilenet_v1", 0.25, 224): (41, 0.5, 50.6),
    ("mobilenet_v1", 1.0, 192): (418, 4.2, 69.1),
    ("mobilenet_v1", 1.0, 160): (290, 4.2, 67.2),
    ("mobilenet_v1", 1.0, 128): (186, 4.2, 64.4),
    ("mobilenet_v2", 1.0, 224): (300, 3.4, 72.0),
    ("mobilenet_v2", 1.4, 224): (585, 6.9, 74.7),
}


def layer_type(module: nn.Module) -> str | None:
    """The paper's Table 2 row a layer belongs to, or None for layers without weights of their own."""
    if isinstance(module, nn.Linear):
        return "fc"
    if isinstance(module, nn.BatchNorm2d):
        return "batchnorm"
    if isinstance(module, nn.Conv2d):
        if module.groups > 1 and module.groups == module.in_channels:
            return "depthwise 3x3"
        return "conv 1x1" if module.kernel_size == (1, 1) else "full conv 3x3"
    return None


@dataclass
class TypeCost:
    madds: int = 0
    params: int = 0


@dataclass
class CostReport:
    """What `measure_cost` found for one model at one resolution."""

    resolution: int
    params: int
    madds: int
    by_type: dict[str, TypeCost] = field(default_factory=dict)
    separable_madds: int = 0  # depthwise + the 1x1 conv that follows it, in every block
    standard_madds: int = 0  # the same layers as one standard 3x3 conv each (measured on a twin)
    formula_madds: float = 0.0  # standard cost x (1/N + 1/Dk^2), summed over those layers

    def share(self, kind: str, what: str) -> float:
        """Percent of all conv/FC mult-adds or params (BatchNorm excluded, as in the paper)."""
        total = sum(getattr(c, what) for k, c in self.by_type.items() if k != "batchnorm")
        return 100.0 * getattr(self.by_type[kind], what) / total if total else 0.0

    def format(self) -> str:
        lines = [
            f"resolution {self.resolution}: {self.params / 1e6:.3f} M params ({self.params:,}), "
            f"{self.madds / 1e6:.1f} M mult-adds",
            f"{'layer type':<15}{'M mult-adds':>12}{'share':>9}{'M params':>11}{'share':>9}",
        ]
        for kind in LAYER_TYPES:
            cost = self.by_type.get(kind, TypeCost())
            share = "" if kind == "batchnorm" else f"{self.share(kind, 'madds'):8.2f}%"
            pshare = "" if kind == "batchnorm" else f"{self.share(kind, 'params'):8.2f}%"
            lines.append(f"{kind:<15}{cost.madds / 1e6:12.2f}{share:>9}{cost.params / 1e6:11.4f}{pshare:>9}")
        if self.standard_madds:
            lines += [
                "depthwise separable vs standard 3x3 convolutions (same layers):",
                f"  separable {self.separable_madds / 1e6:.1f} M, standard {self.standard_madds / 1e6:.1f} M mult-adds: "
                f"measured ratio {self.separable_madds / self.standard_madds:.4f} "
                f"({self.standard_madds / self.separable_madds:.2f}x fewer)",
                f"  formula 1/N + 1/Dk^2, cost-weighted over the layers: {self.formula_madds / self.standard_madds:.4f}",
            ]
        return "\n".join(lines)


def count_madds(model: nn.Module, resolution: int, in_chans: int = 3) -> tuple[int, dict[str, int]]:
    """Mult-adds of one forward pass at ``resolution`` x ``resolution``: total and per leaf module name."""
    model = model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, in_chans, resolution, resolution))
    counts = counter.get_flop_counts()
    root = type(model).__name__
    per_module = {}
    for name, module in model.named_modules():
        flops = counts.get(f"{root}.{name}", {})
        if name and not list(module.children()) and flops:
            per_module[name] = int(sum(flops.values())) // 2
    return counter.get_total_flops() // 2, per_module


def standard_conv_twin(model: nn.Module) -> tuple[nn.Module, list[tuple[str, str, str]]]:
    """A copy of ``model`` with every depthwise + 1x1 pair replaced by one standard 3x3 conv.

    Returns the twin and, per replaced pair, (depthwise name, 1x1 name, standard conv name).
    """
    twin = copy.deepcopy(model)
    pairs = []
    for name, block in twin.named_modules():
        if isinstance(block, DepthwiseSeparable):
            pw_attr = "conv_pw"
        elif isinstance(block, InvertedResidual):
            pw_attr = "conv_pwl"
        else:
            continue
        dw, pw = block.conv_dw.conv, getattr(block, pw_attr).conv
        act = None if isinstance(getattr(block, pw_attr).act, nn.Identity) else type(getattr(block, pw_attr).act)
        block.conv_dw = ConvBNAct(dw.in_channels, pw.out_channels, dw.kernel_size[0], dw.stride[0], act_layer=act)
        setattr(block, pw_attr, nn.Identity())
        pairs.append((f"{name}.conv_dw.conv", f"{name}.{pw_attr}.conv", f"{name}.conv_dw.conv"))
    return twin, pairs


def measure_cost(model: nn.Module, resolution: int = 224, in_chans: int = 3) -> CostReport:
    """Measure params and mult-adds of ``model`` per layer type, and against standard convolutions.

    Example:
        >>> from mobilenet_pl import mobilenet_v1
        >>> round(measure_cost(mobilenet_v1(), 224).madds / 1e6)
        569
    """
    total, per_module = count_madds(model, resolution, in_chans)
    report = CostReport(resolution=resolution, params=sum(p.numel() for p in model.parameters()), madds=total)
    for name, module in model.named_modules():
        kind = layer_type(module)
        if kind is None:
            continue
        cost = report.by_type.setdefault(kind, TypeCost())
        cost.madds += per_module.get(name, 0)
        cost.params += sum(p.numel() for p in module.parameters(recurse=False))

    twin, pairs = standard_conv_twin(model)
    if pairs:
        _, twin_per_module = count_madds(twin, resolution, in_chans)
        twin_modules = dict(twin.named_modules())
        for dw_name, pw_name, std_name in pairs:
            report.separable_madds += per_module[dw_name] + per_module[pw_name]
            standard = twin_per_module[std_name]
            conv = twin_modules[std_name]
            assert isinstance(conv, nn.Conv2d)
            report.standard_madds += standard
            report.formula_madds += standard * (1 / conv.out_channels + 1 / (conv.kernel_size[0] * conv.kernel_size[1]))
    return report
