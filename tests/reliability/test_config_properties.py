"""Property-based test of config validation: any value is either accepted or refused with a message
naming the key and the value, and exactly the values inside the documented ranges are accepted."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from helpers import compose_train, make_image_folder
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from omegaconf import DictConfig, open_dict

from mobilenet_pl.app.config import ConfigError, validate

numbers = st.one_of(st.floats(allow_nan=True, allow_infinity=True, width=32), st.integers(-(10**6), 10**6))


@pytest.fixture(scope="module")
def base_cfg(tmp_path_factory: pytest.TempPathFactory) -> DictConfig:
    run_dir = tmp_path_factory.mktemp("props")
    return compose_train([], Path(run_dir))


def finite(value: float) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    width=numbers,
    resolution=st.one_of(st.none(), st.integers(-64, 4096)),
    batch=st.integers(-8, 4096),
    lr=numbers,
    epochs=st.integers(-3, 1000),
)
def test_validation_accepts_exactly_the_allowed_ranges(
    base_cfg: DictConfig, width: float, resolution: int | None, batch: int, lr: float, epochs: int
) -> None:
    cfg = base_cfg.copy()
    with open_dict(cfg):
        cfg.width = width
        cfg.resolution = resolution
        cfg.data.batch_size = batch
        cfg.optimizer.lr = lr
        cfg.trainer.max_epochs = epochs
    allowed = (
        finite(width) and 0 < width <= 4
        and (resolution is None or 32 <= resolution <= 2048)
        and batch >= 1
        and finite(lr) and lr > 0
        and epochs >= 1
    )  # fmt: skip
    if allowed:
        validate(cfg)
        return
    with pytest.raises(ConfigError) as info:
        validate(cfg)
    message = str(info.value)
    assert " is not allowed: " in message
    key = message.split("=", 1)[0]
    assert key in {"width", "resolution", "data.batch_size", "optimizer.lr", "trainer.max_epochs"}


GROUPS = {
    "model": ["v1", "v2"],
    "data": ["digits", "fake", "imagefolder", "cifar10", "cifar100"],
    "optimizer": ["adamw", "rmsprop", "sgd"],
    "scheduler": ["cosine", "exponential", "none", "step"],
    "trainer": ["cpu", "ddp", "debug", "default", "gpu"],
    "logger": ["csv", "none", "wandb"],
}
# keys and hostile values: wrong kinds, out of range, fractions for whole numbers
VALUES = st.one_of(
    st.integers(-3, 5000), st.floats(-2, 3000, allow_nan=False), st.sampled_from(["abc", "null", "1e9", "[1,2]", "0"])
)
KEYS = [
    "width", "resolution", "seed", "data.batch_size", "data.num_workers", "optimizer.lr", "recipe.label_smoothing",
    "recipe.mixup", "recipe.cutmix", "recipe.ema_decay", "trainer.max_epochs", "trainer.check_val_every_n_epoch",
    "trainer.log_every_n_steps", "trainer.num_nodes", "+modle", "+data.bogus_key", "+trainer.bogus_key",
]  # fmt: skip


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    groups=st.fixed_dictionaries({group: st.sampled_from(options) for group, options in GROUPS.items()}),
    overrides=st.dictionaries(st.sampled_from(KEYS), VALUES, max_size=3),
)
def test_every_group_option_composes_or_is_refused_in_one_line_naming_a_key(
    groups: dict[str, str], overrides: dict[str, object], tmp_path_factory: pytest.TempPathFactory
) -> None:
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from mobilenet_pl.app.config import check_known_keys
    from mobilenet_pl.app.errors import _expected, one_line

    root = tmp_path_factory.getbasetemp() / "fuzz_images"
    if not root.exists():
        make_image_folder(root, classes=2, per_class=1)
    args = [f"{group}={option}" for group, option in groups.items()]
    if groups["data"] == "imagefolder":
        args.append(f"data.root={root}")
    args += [f"{key}={value}" for key, value in overrides.items()]
    try:
        cfg = compose_train(args, tmp_path_factory.getbasetemp())
        check_known_keys("train", cfg)
        validate(cfg)
    except (ConfigError, HydraException, OmegaConfBaseException) as err:
        assert _expected(err) is not None  # the error boundary reports it in one line, exit 2
        line = one_line(err)
        named = [key.lstrip("+") for key in overrides] + [f"{group}" for group in groups] + ["trainer.devices"]
        assert any(key in line or key.split(".")[-1] in line for key in named), line
        return
    assert cfg.model.name.startswith("mobilenet_v")  # accepted: a composed config with every group filled
    assert set(cfg) >= {"model", "data", "optimizer", "scheduler", "trainer", "logger", "callbacks", "recipe"}
    assert not any(key.startswith("+") and "bogus" in key for key in overrides)  # an unknown key never passes
