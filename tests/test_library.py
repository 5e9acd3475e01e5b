"""The library surface: one import for the backbones without Lightning, the Lightning names on demand."""

from __future__ import annotations

import json
import subprocess
import sys

import mobilenet_pl

PROBE = """
import json, sys
def loaded():
    return {m: m in sys.modules for m in ("lightning", "hydra")}
import mobilenet_pl
from mobilenet_pl.models import from_checkpoint
mobilenet_pl.mobilenet_v2(width=0.25)
backbones_only = loaded()
from mobilenet_pl import MobileNetClassifier
print(json.dumps([backbones_only, loaded()]))
"""


def test_import_mobilenet_pl_leaves_lightning_out_until_a_lightning_name_is_used() -> None:
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True, timeout=120)
    backbones_only, after = json.loads(out.stdout.strip().splitlines()[-1])
    assert backbones_only == {"lightning": False, "hydra": False}
    assert after["lightning"] is True


def test_lightning_names_resolve_on_first_use() -> None:
    from mobilenet_pl.lit.classifier import MobileNetClassifier
    from mobilenet_pl.lit.data import (
        CIFARDataModule,
        DigitsDataModule,
        FakeDataModule,
        ImageDataModule,
        ImageFolderDataModule,
    )

    assert mobilenet_pl.MobileNetClassifier is MobileNetClassifier
    for cls in (CIFARDataModule, DigitsDataModule, FakeDataModule, ImageDataModule, ImageFolderDataModule):
        assert getattr(mobilenet_pl, cls.__name__) is cls
        assert getattr(mobilenet_pl.lit, cls.__name__) is cls
    assert set(mobilenet_pl.__all__) <= set(dir(mobilenet_pl))
    assert mobilenet_pl.from_checkpoint is mobilenet_pl.models.from_checkpoint


def test_unknown_name_is_an_attribute_error() -> None:
    import pytest

    with pytest.raises(AttributeError, match="has no attribute 'MobileNetClasifier'"):
        _ = mobilenet_pl.MobileNetClasifier  # type: ignore[attr-defined]
