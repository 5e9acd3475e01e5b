"""``mobilenet_pl.lit.data``: one module per data source, every public name still reachable from the package."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
from hydra.utils import get_class
from omegaconf import OmegaConf

import mobilenet_pl.lit.data as data

CONF = Path(__file__).resolve().parents[2] / "conf"


@pytest.mark.parametrize("name", data.__all__)
def test_every_public_name_resolves_to_the_module_that_defines_it(name: str) -> None:
    defined_in = importlib.import_module(f"mobilenet_pl.lit.data.{data._EXPORTS[name]}")
    assert getattr(data, name) is getattr(defined_in, name)
    assert name in dir(data)


def test_the_face_lists_what_it_exports() -> None:
    assert sorted(data.__all__) == sorted(data._EXPORTS)
    with pytest.raises(AttributeError, match="has no attribute 'ImageFolderDataMod'"):
        _ = data.ImageFolderDataMod  # type: ignore[attr-defined]


@pytest.mark.parametrize("option", sorted(p.stem for p in (CONF / "data").glob("*.yaml")))
def test_each_data_option_names_a_class_of_the_package(option: str) -> None:
    target = str(OmegaConf.load(CONF / "data" / f"{option}.yaml")._target_)
    assert target.startswith("mobilenet_pl.lit.data.")
    assert get_class(target) is getattr(data, target.rpartition(".")[2])
