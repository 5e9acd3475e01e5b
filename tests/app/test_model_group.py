"""conf/model/*.yaml is the backbone's keyword dict: its keys are `create_model`'s, its values the model's
defaults (written once, in `MobileNet.__init__`), and it reaches the checkpoint as one ``model`` dict."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import CONF, compose_train
from omegaconf import OmegaConf

from mobilenet_pl.app.build import build_module
from mobilenet_pl.lit.data import FakeDataModule
from mobilenet_pl.models.hparams import architecture_defaults

APP_KEYS = {"name", "pretrained"}  # pretrained is a starting point, not part of the architecture


@pytest.mark.parametrize("option", sorted(p.stem for p in (CONF / "model").glob("*.yaml")))
def test_model_group_states_the_models_own_keywords_and_defaults(option: str, run_dir: Path) -> None:
    group = OmegaConf.to_container(compose_train([f"model={option}"], run_dir).model)
    assert isinstance(group, dict)
    defaults = architecture_defaults()
    assert set(group) - APP_KEYS <= set(defaults)
    stated = {k: v for k, v in group.items() if k not in APP_KEYS and v is not None}  # null: the data decides
    assert stated == {k: defaults[k] for k in stated}


def test_build_module_passes_the_group_as_one_dict(run_dir: Path) -> None:
    cfg = compose_train(["model=v1", "width=0.25", "model.drop_path_rate=0.1"], run_dir)
    datamodule = FakeDataModule(resolution=32, batch_size=4)
    module = build_module(cfg, datamodule)
    assert module.hparams["model"] == {
        **architecture_defaults(),
        "name": "mobilenet_v1",
        "width": 0.25,
        "drop_path_rate": 0.1,
        "small_input": datamodule.small_input,  # model.small_input=null: the data set decides
    }
    assert "pretrained" not in module.hparams
