"""The models measured: ours and the peers (timm, torchvision) that exist at a width."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from mobilenet_pl.bench.step import FAMILIES, Config, autocast_for
from mobilenet_pl.models import create_model


@dataclass
class Contender:
    key: str  # "ours", "timm", "torchvision"
    label: str
    build: Callable[[], nn.Module]


def timm_name(family: str, width: float) -> str:
    """timm's registered name for a width, e.g. ``("v2", 0.35) -> "mobilenetv2_035"``."""
    return f"mobilenet{family}_{round(width * 100):03d}"


def contenders(family: str, width: float, num_classes: int = 1000) -> tuple[list[Contender], list[str]]:
    """Ours and the peers that exist at this width, plus notes on the ones that do not."""
    import timm
    import torchvision

    name = FAMILIES[family]
    found = [Contender("ours", f"mobilenet_pl {name} w{width:g}", lambda: create_model(name, width=width))]
    notes: list[str] = []
    tname = timm_name(family, width)
    if timm.is_model(tname):
        # drop_rate 0.2 as ours and torchvision's: the same work per step
        found.append(Contender("timm", f"timm {tname}", lambda: timm.create_model(tname, drop_rate=0.2)))
    else:
        notes.append(f"{family}: timm has no {tname} (width {width:g}); no timm peer")
    if family == "v2":
        found.append(
            Contender(
                "torchvision",
                f"torchvision mobilenet_v2(width_mult={width:g})",
                lambda: torchvision.models.mobilenet_v2(width_mult=width, num_classes=num_classes),
            )
        )
    else:
        notes.append("v1: torchvision has no MobileNetV1; no torchvision peer")
    return found, notes


def infer_call(model: nn.Module, cfg: Config, x: torch.Tensor) -> Callable[[], None]:
    @torch.inference_mode()
    def call() -> None:
        with autocast_for(cfg):
            model(x)

    return call
