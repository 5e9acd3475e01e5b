"""Library values that cannot work are refused when given, naming the argument: MobileNetClassifier and
create_model arguments, checkpoint hyperparameters that ask for absurd sizes (refused before allocating) or
that disagree with the checkpoint's weights (one line, never a silently fresh classifier)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import lightning as L
import pytest

from mobilenet_pl.eval import main as eval_main
from mobilenet_pl.export import main as export_main
from mobilenet_pl.lit.classifier import MobileNetClassifier
from mobilenet_pl.models import create_model
from mobilenet_pl.models.checkpoint import from_checkpoint

SMALL = {"name": "v2", "width": 0.25, "small_input": True}


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"ema_decay": 1.0}, "ema_decay"),
        ({"ema_decay": -0.1}, "ema_decay"),
        ({"label_smoothing": 2.0}, "label_smoothing"),
        ({"label_smoothing": 1.0}, "label_smoothing"),
        ({"mixup": -1.0}, "mixup"),
        ({"cutmix": float("nan")}, "cutmix"),
        ({"num_classes": 2.5}, "num_classes"),
        ({"num_classes": 0}, "num_classes"),
        ({"num_classes": True}, "num_classes"),
        ({"in_chans": 2.5}, "in_chans"),
        ({"resolution": 16}, "resolution"),
        ({"model": {**SMALL, "act_layer": None}}, "act_layer"),
        ({"model": {**SMALL, "width": 10**6}}, "width"),
        ({"num_classes": 10**9}, "num_classes"),
        ({"pretrained": 123}, "pretrained"),
        ({"num_classes": 3, "class_names": ["a", "b"]}, "class_names"),
    ],
)
def test_classifier_refuses_values_that_cannot_work(kwargs: dict[str, Any], named: str) -> None:
    args = {"model": SMALL, "num_classes": 10, "resolution": 32, **kwargs}
    started = time.perf_counter()
    with pytest.raises(ValueError, match=named):
        MobileNetClassifier(**args)
    assert time.perf_counter() - started < 5  # refused before allocating anything large


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"num_classes": 2.5}, "num_classes"),
        ({"in_chans": 2.5}, "in_chans"),
        ({"in_chans": 0}, "in_chans"),
        ({"act_layer": None}, "act_layer"),
        ({"act_layer": 3}, "act_layer"),
        ({"pretrained": 123}, "pretrained"),
        ({"width": 5000.0}, "width"),
        ({"in_chans": 10**9}, "in_chans"),
    ],
)
def test_create_model_refuses_values_that_cannot_work(kwargs: dict[str, Any], named: str) -> None:
    for features_only in (False, True) if "num_classes" not in kwargs else (False,):  # features ignore it (timm)
        with pytest.raises(ValueError, match=named):
            create_model("v1", features_only=features_only, **kwargs)


def save_checkpoint(path: Path, hparams: dict[str, Any] | None = None) -> Path:
    """A training checkpoint as Lightning writes it, with ``hparams`` changed after the weights were made."""
    import torch

    module = MobileNetClassifier(SMALL, num_classes=10, in_chans=1, resolution=32)
    hyper = dict(module.hparams)
    for key, value in (hparams or {}).items():
        if key.startswith("model."):
            hyper["model"] = {**hyper["model"], key[6:]: value}
        else:
            hyper[key] = value
    torch.save(
        {
            "state_dict": module.state_dict(),
            "hyper_parameters": hyper,
            "pytorch-lightning_version": L.__version__,
            "epoch": 0,
            "global_step": 0,
        },
        path,
    )
    return path


CHANGES = {
    "absurd width": ({"model.width": 10**6}, "billion parameters"),
    "absurd classes": ({"num_classes": 10**9, "class_names": None}, "billion parameters"),
    "absurd channels": ({"in_chans": 10**8}, "billion parameters"),
    "classes vs weights": ({"num_classes": 5, "class_names": None}, "disagree with its weights"),
    "width vs weights": ({"model.width": 0.5}, "disagree with its weights"),
    "ema decay of 1": ({"ema_decay": 1.0}, "ema_decay"),
}


@pytest.mark.parametrize("change", list(CHANGES))
def test_checkpoint_hyperparameters_that_cannot_work_are_one_line(
    change: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    hparams, expected = CHANGES[change]
    ckpt = save_checkpoint(tmp_path / "bad.ckpt", hparams)
    started = time.perf_counter()
    with pytest.raises(ValueError, match=expected):
        MobileNetClassifier.load_from_checkpoint(ckpt)
    if "ema_decay" not in expected:  # the plain-PyTorch reader: never a random classifier
        with pytest.raises(ValueError, match=expected):
            from_checkpoint(ckpt)
    assert time.perf_counter() - started < 10
    assert eval_main([f"ckpt_path={ckpt}", f"hydra.run.dir={tmp_path / 'eval'}"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], lines
    if "ema_decay" not in expected:  # export reads the weights only, never the training recipe
        assert export_main([f"ckpt_path={ckpt}", "format=torchscript", "check=false"]) == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], lines


def test_a_checkpoint_that_agrees_with_itself_loads(tmp_path: Path) -> None:
    ckpt = save_checkpoint(tmp_path / "good.ckpt")
    assert MobileNetClassifier.load_from_checkpoint(ckpt).hparams["num_classes"] == 10
    assert from_checkpoint(ckpt).num_classes == 10
    assert from_checkpoint(ckpt, num_classes=3).num_classes == 3  # a new head on purpose still works
