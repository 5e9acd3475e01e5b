"""The one reader of weight files: every kind of bad file is one `WeightsFileError` line naming the key and the
file; good files of every format read (our checkpoints with their architecture, foreign state dicts, safetensors)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import torchvision

from mobilenet_pl._checks import first_line, is_finite_number
from mobilenet_pl.models import WeightsFileError, create_model, read_weights

ARCH = {"name": "mobilenet_v1", "width": 0.25, "small_input": True}


def our_checkpoint(ema: bool = False, **hparams: Any) -> dict[str, Any]:
    """What MobileNetClassifier's checkpoint holds, built without Lightning."""
    net = create_model("v1", width=0.25, small_input=True, num_classes=10)
    backbone = {k: v for k, v in net.state_dict().items() if not k.startswith("classifier.")}
    state = {f"backbone.{k}": v for k, v in backbone.items()}
    state.update({k: v for k, v in net.state_dict().items() if k.startswith("classifier.")})
    if ema:
        state.update({f"ema.module.0.{k}": v + 1 for k, v in backbone.items()})
        state.update(
            {f"ema.module.1.{k[len('classifier.') :]}": v for k, v in state.items() if k.startswith("classifier.")}
        )
    return {"state_dict": state, "hyper_parameters": {"model": dict(ARCH), "num_classes": 10, "in_chans": 3, **hparams}}


def write(path: Path, content: Any) -> Path:
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        torch.save(content, path)
    return path


class Pickled:
    """Any class: ``weights_only=True`` refuses to build it."""


def _truncated(path: Path) -> Path:
    write(path, our_checkpoint())
    path.write_bytes(path.read_bytes()[:1000])
    return path


def _mismatched(path: Path) -> Path:
    ckpt = our_checkpoint()
    ckpt["hyper_parameters"]["model"]["width"] = 0.5  # the weights are width 0.25
    return write(path, ckpt)


def _nan(path: Path) -> Path:
    ckpt = our_checkpoint()
    ckpt["state_dict"]["backbone.stem.conv.weight"][0] = float("nan")
    return write(path, ckpt)


# file maker, checkpoint=?, finite=?, the reason (after "is not allowed: ")
BAD: dict[str, tuple[Callable[[Path], Path], bool, bool, str]] = {
    "missing": (lambda p: p, False, False, r"the file does not exist"),
    "folder": (lambda p: (p.mkdir(), p)[1], False, False, r"it is a folder, not a weights file"),
    "empty": (lambda p: write(p, b""), False, False, r"the file is empty \(0 bytes\)"),
    "truncated": (_truncated, True, False, r"the file is truncated or corrupt \(PytorchStreamReader"),
    "results_json": (lambda p: write(p, b'{"val/acc1": 0.9}'), False, False, r"not a readable weights file: not a loadable tensor-only"),
    "list": (lambda p: write(p, [torch.zeros(2)]), False, False, r"not a readable weights file: it holds a list"),
    "int_keys": (lambda p: write(p, {1: torch.zeros(2)}), False, False, r"not a readable weights file: its keys are not parameter names"),
    "no_mobilenet": (lambda p: write(p, {"fc.weight": torch.zeros(2)}), False, False, r"not a readable weights file: state dict is not a MobileNet"),
    "torchscript": (lambda p: (torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), p), p)[1], False, False, r"not a readable weights file: an exported model.*ONNX/TorchScript"),
    "pickled": (lambda p: write(p, {"state_dict": {}, "x": Pickled()}), False, False, r"it holds pickled objects: not a loadable tensor-only checkpoint, refused for safety.*Weights only load failed.*Pickled"),
    "bare_state_dict": (lambda p: write(p, create_model("v1", width=0.25).state_dict()), True, False, r"not a mobilenet_pl training checkpoint: it holds no mobilenet_pl hyperparameters .*model.pretrained=PATH"),
    "other_project": (lambda p: write(p, {"state_dict": {}, "hyper_parameters": {"lr": 0.1}}), True, False, r"a checkpoint of another project: .*\['lr'\]"),
    "unknown_model": (lambda p: write(p, our_checkpoint(model={"name": "resnet50"})), True, False, r"a checkpoint of another project or version: model='resnet50' is unknown"),
    "hparams_vs_weights": (_mismatched, True, False, r"its hyperparameters \(mobilenet_v1 width 0.5 \(10 classes, 3 channels\)\) disagree with its weights: mis-shaped"),
    "nan": (_nan, True, True, r"1 weight tensor\(s\) hold NaN/inf \(first: backbone.stem.conv.weight\)"),
}  # fmt: skip


@pytest.mark.parametrize("kind", sorted(BAD))
def test_each_bad_file_is_one_line_naming_key_file_and_reason(kind: str, tmp_path: Path) -> None:
    make, checkpoint, finite, reason = BAD[kind]
    path = make(tmp_path / f"{kind}.pt")
    with pytest.raises(WeightsFileError, match=rf"^ckpt_path='{path}' is not allowed: {reason}") as caught:
        read_weights(path, key="ckpt_path", checkpoint=checkpoint, finite=finite)
    assert "\n" not in str(caught.value) and len(str(caught.value)) < 600
    assert isinstance(caught.value, ValueError) and caught.value.key == "ckpt_path" and caught.value.path == str(path)


def test_garbage_safetensors_is_one_line(tmp_path: Path) -> None:
    path = write(tmp_path / "w.safetensors", b"not a safetensors file" * 10)
    with pytest.raises(WeightsFileError, match=r"is not allowed: not a readable weights file: not a safetensors file"):
        read_weights(path)


def test_our_checkpoint_reads_with_its_architecture_and_ema_weights(tmp_path: Path) -> None:
    path = write(tmp_path / "run.ckpt", our_checkpoint(ema=True, lr=0.1))
    weights = read_weights(path, checkpoint=True)
    assert weights.hparams is not None and weights.hparams["model"]["name"] == "mobilenet_v1"
    assert weights.hparams["model"]["dropout"] == create_model("v1").dropout.p  # defaults filled in
    raw = read_weights(path, ema=False).state_dict
    torch.testing.assert_close(weights.state_dict["stem.conv.weight"], raw["stem.conv.weight"] + 1)
    assert set(weights.state_dict) == set(create_model("v1", width=0.25, num_classes=10).state_dict())


def test_ema_weights_that_disagree_are_refused_too(tmp_path: Path) -> None:
    ckpt = our_checkpoint(ema=True)
    ckpt["state_dict"]["ema.module.0.stem.conv.weight"] = torch.zeros(1, 1, 1, 1)
    with pytest.raises(WeightsFileError, match=r"disagree with its EMA weights: mis-shaped"):
        read_weights(write(tmp_path / "run.ckpt", ckpt))


def test_foreign_state_dicts_and_safetensors_read_in_our_layout(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    theirs = torchvision.models.mobilenet_v2(width_mult=0.5).state_dict()
    expected = set(create_model("v2", width=0.5).state_dict())
    for name in ("tv.pth", "tv.bin"):
        assert set(read_weights(write(tmp_path / name, theirs)).state_dict) == expected
    save_file(theirs, tmp_path / "tv.safetensors")
    weights = read_weights(tmp_path / "tv.safetensors")
    assert set(weights.state_dict) == expected and weights.hparams is None


def test_the_error_pickles_whole() -> None:
    import pickle

    err = WeightsFileError("pretrained", "/x.pth", "the file does not exist")
    again = pickle.loads(pickle.dumps(err))
    assert str(again) == str(err) == "pretrained='/x.pth' is not allowed: the file does not exist"


def test_shared_helpers() -> None:
    assert [is_finite_number(v) for v in (0, 2.5, True, float("inf"), float("nan"), None, "1")] == [
        True,
        True,
        False,
        False,
        False,
        False,
        False,
    ]
    assert first_line(RuntimeError("\n  first \nsecond")) == "first"
    assert first_line(KeyError()) == "KeyError"
    assert first_line(ValueError("x" * 50), limit=10) == "xxxxxxx..."
