"""Property-based test of config validation: any value is either accepted or refused with a message
naming the key and the value, and exactly the values inside the documented ranges are accepted."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from helpers import compose_train
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from omegaconf import DictConfig, open_dict

from mobilenet_pl.config import ConfigError, validate

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
