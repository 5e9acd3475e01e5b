"""Optimizers and learning-rate schedules chosen by name from an allow-list, configured by numbers.

An optimizer or scheduler config is ``{"name": "sgd", "lr": 0.045, "momentum": 0.9, ...}``: a name from
`OPTIMIZERS` / `SCHEDULERS` plus numbers. The LightningModule keeps these dicts as hyperparameters, and
a checkpoint's hyperparameters are data, never code: nothing here imports a dotted path it was given,
and a ``_target_`` is refused.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping
from typing import Any

import torch
from timm.optim import RMSpropTF, param_groups_weight_decay
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

from mobilenet_pl._checks import is_finite_number

SchedulerConfig = dict[str, Any]


class GroupTolerantLambdaLR(LambdaLR):
    """LambdaLR that adopts parameter groups added mid-training (Lightning's BackboneFinetuning adds one
    when it unfreezes): the new group follows the same schedule from the lr it was added with.

    Kept instead of ``timm.scheduler.CosineLRScheduler``: observed with timm 1.0.31, a group added by
    ``optimizer.add_param_group`` after the scheduler is built keeps its initial lr for the rest of the
    run (timm's ``update_groups`` zips the groups with the values computed for the original groups), so
    the unfrozen backbone would train at a constant lr (see tests/app/test_optim.py).
    """

    def get_lr(self) -> list[float]:  # type: ignore[override]
        for group in self.optimizer.param_groups[len(self.base_lrs) :]:
            factor = self.lr_lambdas[0](max(self.last_epoch - 1, 0)) or 1.0
            group.setdefault("initial_lr", group["lr"] / factor)
            self.base_lrs.append(group["initial_lr"])
            self.lr_lambdas.append(self.lr_lambdas[0])
        return [float(lr) for lr in super().get_lr()]


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


# The allow-lists: the only code an optimizer or scheduler config can reach.
OPTIMIZERS: dict[str, Callable[..., torch.optim.Optimizer]] = {
    "adamw": torch.optim.AdamW,
    "rmsprop": RMSpropTF,  # the papers' RMSProp with TensorFlow-style epsilon
    "sgd": torch.optim.SGD,
}
SCHEDULERS: dict[str, Callable[..., SchedulerConfig]] = {
    "cosine": warmup_cosine,
    "exponential": exponential,
    "none": constant,
    "step": step,
}
# The library's optimizer when none is given. The same values as the training app's default recipe
# (conf/optimizer/adamw.yaml, chosen in conf/train.yaml); tests/app/test_optim.py keeps the two equal.
DEFAULT_OPTIMIZER: dict[str, Any] = {"name": "adamw", "lr": 0.005, "weight_decay": 0.05}
# Arguments filled in by the module, not by the config.
_BUILT_IN = {"params", "optimizer", "steps_per_epoch", "max_epochs"}


def _is_number(value: Any) -> bool:
    return isinstance(value, bool) or is_finite_number(value)  # booleans are options too (nesterov)


def check_config(kind: str, config: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The config as a plain ``{"name": ..., numbers...}`` dict, or ValueError naming the key.

    ``kind`` is ``"optimizer"`` or ``"scheduler"``. A ``_target_`` is refused, so nothing read from a file
    names code to call.
    """
    if config is None:
        return None
    table = OPTIMIZERS if kind == "optimizer" else SCHEDULERS
    choices = ", ".join(sorted(table))
    out = {str(k): v for k, v in dict(config).items()}
    if "_target_" in out:
        raise ValueError(
            f"{kind}._target_={out['_target_']!r} is not allowed: a {kind} is a name ({choices}) plus numbers; "
            "nothing read from a config or checkpoint may name code to call"
        )
    name = str(out.get("name"))
    if name not in table:
        raise ValueError(f"{kind}.name={out.get('name')!r} is not allowed: choose one of {choices}")
    accepted = [p for p in inspect.signature(table[name]).parameters.values() if p.kind != p.VAR_KEYWORD]
    allowed = {p.name for p in accepted} - _BUILT_IN
    for key, value in out.items():
        if key == "name":
            continue
        if key not in allowed:
            raise ValueError(f"{kind}.{key} is not an option of {kind} {name!r}; its options: {sorted(allowed)}")
        numbers = value if isinstance(value, (list, tuple)) else [value]
        if not numbers or not all(_is_number(v) for v in numbers):
            raise ValueError(f"{kind}.{key}={value!r} is not allowed: {kind} values must be finite numbers")
        if isinstance(value, tuple):
            out[key] = list(value)
    _try(kind, out)
    return out


def _try(kind: str, config: dict[str, Any]) -> None:
    """Build (and for a schedule, step) the config on a dummy parameter, so a value torch refuses, or one
    that fails only later (``step_size: 0`` divides by zero at the first epoch), stops here, named."""
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    options = {k: tuple(v) if isinstance(v, list) else v for k, v in config.items() if k != "name"}
    try:
        if kind == "optimizer":
            OPTIMIZERS[config["name"]]([nn.Parameter(torch.zeros(1))], **options)
            return
        schedule = SCHEDULERS[config["name"]](optimizer, steps_per_epoch=2, max_epochs=2, **options)["scheduler"]
        for _ in range(4):
            optimizer.step()
            schedule.step()
    except (ValueError, TypeError, ArithmeticError) as err:
        settings = ", ".join(f"{kind}.{k}={v!r}" for k, v in options.items())
        raise ValueError(f"{kind} {config['name']!r} with {settings or 'its defaults'} is not allowed: {err}") from None


def build_optimizer(config: Mapping[str, Any], model: nn.Module) -> torch.optim.Optimizer:
    """The optimizer ``config`` names over ``model``'s trainable parameters.

    BatchNorm parameters and biases get no weight decay (``timm.optim.param_groups_weight_decay``); the
    configured weight decay is also the optimizer's default, for groups added later (finetuning).
    """
    checked = check_config("optimizer", config)
    assert checked is not None
    options = {k: tuple(v) if isinstance(v, list) else v for k, v in checked.items() if k != "name"}
    groups = param_groups_weight_decay(model, float(checked.get("weight_decay", 0.0)))
    return OPTIMIZERS[checked["name"]](groups, **options)


def build_scheduler(
    config: Mapping[str, Any], optimizer: torch.optim.Optimizer, *, steps_per_epoch: int, max_epochs: int
) -> SchedulerConfig:
    """Lightning's ``lr_scheduler`` dict for the schedule ``config`` names."""
    checked = check_config("scheduler", config)
    assert checked is not None
    options = {k: v for k, v in checked.items() if k != "name"}
    return SCHEDULERS[checked["name"]](optimizer, steps_per_epoch=steps_per_epoch, max_epochs=max_epochs, **options)


def default_optimizer() -> dict[str, Any]:
    """The library's optimizer when none is given: `DEFAULT_OPTIMIZER` (a fresh copy)."""
    return dict(DEFAULT_OPTIMIZER)


def rescale_checkpoint_lr(checkpoint: dict[str, Any], ratio: float) -> None:
    """Multiply every learning rate a checkpoint restores (optimizer groups, schedulers' base and last rates) by
    ``ratio``, before Lightning restores them from the same dict: the schedule continues at the new scale."""
    for state in checkpoint.get("optimizer_states", []):
        for group in state.get("param_groups", []):
            for name in ("lr", "initial_lr"):
                if isinstance(group.get(name), (int, float)):
                    group[name] = group[name] * ratio
    for state in checkpoint.get("lr_schedulers", []):
        for name in ("base_lrs", "_last_lr"):
            if isinstance(state.get(name), list):
                state[name] = [value * ratio for value in state[name]]
