"""Optimizers and schedules from allow-listed names, and why the schedule is ours rather than timm's."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch
from timm.scheduler import CosineLRScheduler
from torch import nn

from mobilenet_pl.lit.optim import (
    DEFAULT_OPTIMIZER,
    OPTIMIZERS,
    build_optimizer,
    build_scheduler,
    check_config,
    default_optimizer,
)


@pytest.mark.parametrize(
    ("kind", "config", "message"),
    [
        ("optimizer", {"_target_": "os.system", "_args_": ["true"]}, r"optimizer\._target_='os.system' is not allowed"),
        ("optimizer", {"name": "lbfgs", "lr": 1}, r"optimizer\.name='lbfgs' is not allowed: choose one of adamw"),
        ("optimizer", {"name": "sgd", "lrr": 0.1}, r"optimizer\.lrr is not an option of optimizer 'sgd'"),
        ("optimizer", {"name": "sgd", "lr": "0.1"}, r"optimizer\.lr='0.1' is not allowed: .* finite numbers"),
        ("optimizer", {"name": "sgd", "lr": float("nan")}, r"optimizer\.lr=nan is not allowed"),
        ("scheduler", {"name": "cosine", "steps_per_epoch": 3}, r"scheduler\.steps_per_epoch is not an option"),
        ("scheduler", {"_target_": "torch.optim.lr_scheduler.LambdaLR"}, r"scheduler\._target_=.* is not allowed"),
        # values torch refuses, or that would fail only once training runs
        ("optimizer", {"name": "sgd", "lr": 0.1, "momentum": -1}, r"optimizer\.momentum=-1 is not allowed"),
        (
            "optimizer",
            {"name": "adamw", "lr": 0.1, "betas": [0.9, 1.5]},
            r"optimizer\.betas=\(0\.9, 1\.5\).*not allowed",
        ),
        ("scheduler", {"name": "step", "step_size": 0}, r"scheduler 'step' with scheduler\.step_size=0 is not allowed"),
    ],
)
def test_configs_that_name_code_or_hold_non_numbers_are_refused(kind: str, config: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        check_config(kind, config)


def test_the_library_default_optimizer_is_the_apps_default_recipe() -> None:
    """The library's default is written in Python (lit reads nothing from conf/); it must stay the optimizer
    the training app composes by default (conf/train.yaml's ``optimizer`` option), so the two cannot drift."""
    from omegaconf import OmegaConf

    from mobilenet_pl.app.config import config_dir

    conf = Path(config_dir())
    defaults = OmegaConf.to_container(OmegaConf.load(conf / "train.yaml").defaults)
    option = next(entry["optimizer"] for entry in defaults if isinstance(entry, dict) and "optimizer" in entry)
    recipe = check_config("optimizer", OmegaConf.to_container(OmegaConf.load(conf / "optimizer" / f"{option}.yaml")))
    assert default_optimizer() == DEFAULT_OPTIMIZER == recipe, (
        f"lit.optim.DEFAULT_OPTIMIZER {DEFAULT_OPTIMIZER} differs from the app's conf/optimizer/{option}.yaml {recipe}"
    )
    assert check_config("optimizer", DEFAULT_OPTIMIZER) == DEFAULT_OPTIMIZER  # allowed, and already plain
    assert default_optimizer() is not DEFAULT_OPTIMIZER  # a caller's change cannot alter the default
    assert set(OPTIMIZERS) == {"adamw", "rmsprop", "sgd"}
    with pytest.raises(ValueError, match=r"optimizer\._target_='torch\.optim\.SGD' is not allowed"):
        check_config("optimizer", {"_target_": "torch.optim.SGD", "lr": 0.1})  # even one that names a real optimizer


def test_no_weight_decay_on_batchnorm_and_biases() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4, 2))
    model[0].weight.requires_grad_(False)  # frozen parameters stay out (BackboneFinetuning adds them later)
    optimizer = build_optimizer({"name": "sgd", "lr": 0.1, "weight_decay": 0.01}, model)
    by_decay = {g["weight_decay"]: {id(p) for p in g["params"]} for g in optimizer.param_groups}
    assert by_decay[0.01] == {id(model[3].weight)}
    assert by_decay[0.0] == {id(p) for p in (model[0].bias, model[1].weight, model[1].bias, model[3].bias)}
    assert optimizer.defaults["weight_decay"] == 0.01  # what a group added later gets


def test_added_param_group_follows_our_schedule_but_not_timms() -> None:
    """The measured reason GroupTolerantLambdaLR is kept: timm's CosineLRScheduler leaves a group added
    after it was built at its initial lr, ours decays it with the others."""

    def run(make_schedule, step):  # type: ignore[no-untyped-def]
        optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
        schedule = make_schedule(optimizer)
        for i in range(3):
            optimizer.step()
            step(schedule, i)
        optimizer.add_param_group({"params": [nn.Parameter(torch.zeros(1))], "lr": 0.05})
        added = []
        for i in range(3, 8):
            optimizer.step()
            step(schedule, i)
            added.append(optimizer.param_groups[1]["lr"])
        return added

    ours = run(
        lambda opt: build_scheduler(
            {"name": "cosine", "warmup_epochs": 0, "min_lr_ratio": 0.0}, opt, steps_per_epoch=10, max_epochs=1
        )["scheduler"],
        lambda schedule, _i: schedule.step(),
    )
    theirs = run(
        lambda opt: CosineLRScheduler(opt, t_initial=10, t_in_epochs=False),
        lambda schedule, i: schedule.step_update(i + 1),
    )
    assert all(b < a for a, b in itertools.pairwise(ours))  # decays
    assert theirs == [0.05] * 5  # stuck at the lr it was added with
