"""Optimizer parameter groups and learning-rate schedules built from plain config dicts.

Optimizer and scheduler configs are ``{"_target_": ..., "_partial_": true, ...}`` dicts of primitives,
so the LightningModule can keep them as hyperparameters and checkpoints stay ``weights_only``-loadable.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

SchedulerConfig = dict[str, Any]


class GroupTolerantLambdaLR(LambdaLR):
    """LambdaLR that adopts parameter groups added mid-training (Lightning's BackboneFinetuning adds one
    when it unfreezes): the new group follows the same schedule from the lr it was added with."""

    def get_lr(self) -> list[float]:  # type: ignore[override]
        for group in self.optimizer.param_groups[len(self.base_lrs) :]:
            factor = self.lr_lambdas[0](max(self.last_epoch - 1, 0)) or 1.0
            group.setdefault("initial_lr", group["lr"] / factor)
            self.base_lrs.append(group["initial_lr"])
            self.lr_lambdas.append(self.lr_lambdas[0])
        return [float(lr) for lr in super().get_lr()]


def param_groups(modules: list[nn.Module], weight_decay: float) -> list[dict[str, Any]]:
    """Two groups: weight decay on conv/linear weights, none on BatchNorm parameters and biases."""
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for param in (p for module in modules for p in module.parameters()):
        if param.requires_grad:
            (no_decay if param.ndim <= 1 else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def scaled_lr(lr: float, global_batch: int, reference_batch: int = 256) -> float:
    """Linear scaling rule (Goyal et al.; timm's ``--lr-base``): lr grows with the global batch."""
    return lr * global_batch / reference_batch


def warmup_cosine(
    optimizer: torch.optim.Optimizer,
    *,
    steps_per_epoch: int,
    max_epochs: int,
    warmup_epochs: float = 1.0,
    min_lr_ratio: float = 0.01,
) -> SchedulerConfig:
    """Linear warmup, then cosine decay to ``min_lr_ratio`` x lr, stepped every batch."""
    total = max(1, steps_per_epoch * max_epochs)
    warmup = min(int(warmup_epochs * steps_per_epoch), total - 1)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return {"scheduler": GroupTolerantLambdaLR(optimizer, factor), "interval": "step"}


def exponential(optimizer: torch.optim.Optimizer, *, gamma: float = 0.98, **_: Any) -> SchedulerConfig:
    """x ``gamma`` per epoch: the papers' 0.98 decay (V2 paper; torchvision's recipe)."""
    return {"scheduler": torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma), "interval": "epoch"}


def step(optimizer: torch.optim.Optimizer, *, step_size: int = 1, gamma: float = 0.98, **_: Any) -> SchedulerConfig:
    """x ``gamma`` every ``step_size`` epochs (torchvision's ``--lr-step-size --lr-gamma``)."""
    return {"scheduler": torch.optim.lr_scheduler.StepLR(optimizer, step_size, gamma), "interval": "epoch"}


def constant(optimizer: torch.optim.Optimizer, **_: Any) -> SchedulerConfig:
    """No schedule: the learning rate stays where the optimizer config put it."""
    return {"scheduler": GroupTolerantLambdaLR(optimizer, lambda _step: 1.0), "interval": "epoch"}
