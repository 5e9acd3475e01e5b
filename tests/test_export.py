"""BatchNorm folding, ONNX / TorchScript export with metadata, the export CLI and INT8 quantization."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from helpers import tiny_checkpoint
from torch import nn

from mobilenet_pl import create_model
from mobilenet_pl.deploy import (
    PARITY_TOLERANCE,
    check_parity,
    export_onnx,
    export_torchscript,
    fold_batchnorm,
    ort_session,
    read_metadata,
)
from mobilenet_pl.export import main

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")


def _randomize_bn(model: nn.Module) -> nn.Module:
    """Non-trivial BatchNorm statistics and affine parameters, so folding has something to fold."""
    generator = torch.Generator().manual_seed(1)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            n = module.num_features
            module.running_mean.copy_(torch.rand(n, generator=generator) - 0.5)
            module.running_var.copy_(torch.rand(n, generator=generator) + 0.5)
            module.weight.data.copy_(torch.rand(n, generator=generator) + 0.5)
            module.bias.data.copy_(torch.rand(n, generator=generator) - 0.5)
    return model.eval()


@pytest.mark.parametrize("name", ["v1", "v2"])
@pytest.mark.parametrize("width", [0.25, 0.75, 1.4])
def test_fold_batchnorm_keeps_outputs(name: str, width: float) -> None:
    model = _randomize_bn(create_model(name, width=width, num_classes=10))
    folded = fold_batchnorm(model)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), model(x), atol=1e-5, rtol=1e-4)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())  # the original is untouched
    assert not folded.training


def test_fold_batchnorm_small_input_one_channel_and_features() -> None:
    model = _randomize_bn(create_model("v2", width=0.5, num_classes=10, in_chans=1, small_input=True))
    features = _randomize_bn(create_model("v1", width=0.5, features_only=True))
    x1, x3 = torch.randn(2, 1, 32, 32), torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(fold_batchnorm(model)(x1), model(x1), atol=1e-5, rtol=1e-4)
        for got, want in zip(fold_batchnorm(features)(x3), features(x3), strict=True):
            torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)


def test_fold_batchnorm_torchvision_sequential() -> None:
    model = _randomize_bn(torchvision.models.mobilenet_v2(width_mult=0.5, num_classes=10))
    folded = fold_batchnorm(model)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), model(x), atol=1e-5, rtol=1e-4)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())


@pytest.mark.parametrize("name", ["v1", "v2"])
def test_onnx_parity_with_dynamic_batch(name: str, tmp_path: Path) -> None:
    model = _randomize_bn(create_model(name, width=0.5, num_classes=10))
    path = export_onnx(model, tmp_path / "model.onnx", resolution=64)
    assert check_parity(model, path, 64, batch_size=3) <= PARITY_TOLERANCE
    session = ort_session(path)
    assert session.get_inputs()[0].shape[0] == "batch"  # dynamic, not the export batch of 1
    for batch in (1, 5):
        x = torch.randn(batch, 3, 64, 64)
        got = session.run(None, {"input": x.numpy()})[0]
        with torch.no_grad():
            want = model(x).numpy()
        assert got.shape == (batch, 10)
        assert np.abs(got - want).max() <= PARITY_TOLERANCE
    # the exported graph has no BatchNormalization left: it was folded into the convs
    import onnx

    assert "BatchNormalization" not in {node.op_type for node in onnx.load(str(path)).graph.node}


def test_onnx_metadata_round_trip(tmp_path: Path) -> None:
    model = create_model("v2", width=0.35, num_classes=3).eval()
    names = ["cat", "dog", "ünïcode bird"]
    path = export_onnx(
        model, tmp_path / "m.onnx", 64, names, (0.5, 0.4, 0.3), (0.2, 0.25, 0.3), name="mobilenet_v2", width=0.35
    )
    meta = read_metadata(path)
    assert meta["class_names"] == names
    assert meta["mean"] == [0.5, 0.4, 0.3] and meta["std"] == [0.2, 0.25, 0.3]
    assert meta["resolution"] == 64 and meta["model"] == "mobilenet_v2" and meta["width"] == 0.35
    assert meta["in_chans"] == 3 and meta["num_classes"] == 3
    # what an onnxruntime user sees: plain strings, class names as JSON
    custom = ort_session(path).get_modelmeta().custom_metadata_map
    assert custom["model"] == "mobilenet_v2" and custom["resolution"] == "64"
    assert custom["class_names"] == '["cat", "dog", "\\u00fcn\\u00efcode bird"]'


def test_metadata_rejects_wrong_channel_count(tmp_path: Path) -> None:
    model = create_model("v1", width=0.25, num_classes=2, in_chans=1).eval()
    with pytest.raises(ValueError, match="mean has 3 values but the model takes 1 input channels"):
        export_onnx(model, tmp_path / "m.onnx", 32, mean=(0.5, 0.5, 0.5), std=(0.5,))


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
def test_torchscript_parity_and_metadata(tmp_path: Path) -> None:
    model = _randomize_bn(create_model("v2", width=0.5, num_classes=4))
    path = export_torchscript(model, tmp_path / "m.ts", 64, ["a", "b", "c", "d"], name="mobilenet_v2", width=0.5)
    assert check_parity(model, path, 64, batch_size=3) <= PARITY_TOLERANCE
    meta = read_metadata(path)
    assert meta["class_names"] == ["a", "b", "c", "d"] and meta["resolution"] == 64 and meta["width"] == 0.5
    # scripted, not traced: another image size works and the model's own input check survives
    assert check_parity(model, path, 96, batch_size=2) <= PARITY_TOLERANCE
    scripted = torch.jit.load(str(path))
    with pytest.raises(Exception, match="at least 32x32"):
        scripted(torch.randn(1, 3, 16, 16))


# -- CLI on a real (tiny) Lightning checkpoint -------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkpoint written by Lightning after two training steps (BatchNorm statistics updated)."""
    return tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.ckpt", label_smoothing=0.0)


@pytest.mark.parametrize(("fmt", "suffix"), [("onnx", ".onnx"), ("torchscript", ".ts")])
def test_cli_exports_checkpoint_with_parity(
    fmt: str, suffix: str, tiny_ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / f"exported{suffix}"
    assert main([f"ckpt_path={tiny_ckpt}", f"format={fmt}", f"out={out}"]) == 0
    captured = capsys.readouterr()
    text = captured.out
    # TorchScript says once that it is deprecated upstream and what replaces it
    assert ("deprecated upstream; on devices use format=executorch" in captured.err) == (fmt == "torchscript")
    assert f"exported {out}" in text
    diff = float(text.split("max abs logit difference ")[1].split()[0])
    assert diff <= PARITY_TOLERANCE
    meta = read_metadata(out)
    assert meta["class_names"] == ["w", "x", "y", "z"]
    assert meta["model"] == "mobilenet_v2" and meta["width"] == 0.25 and meta["resolution"] == 32
    assert meta["mean"] == pytest.approx([0.485, 0.456, 0.406])  # ImageNet's for a 3-channel model


def test_cli_default_out_next_to_checkpoint(tiny_ckpt: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([f"ckpt_path={tiny_ckpt}", "check=false"]) == 0
    assert tiny_ckpt.with_suffix(".onnx").is_file()
    assert "parity" not in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["ckpt_path=/no/such/file.ckpt"], "ckpt_path='/no/such/file.ckpt' is not allowed: the file does not exist"),
        (["format=onnx"], "ckpt_path is missing: set ckpt_path=PATH.ckpt"),
        (
            ["ckpt_path=x.ckpt", "format=tflite"],
            "Invalid value 'tflite', expected one of [onnx, executorch, torchscript]",
        ),
        (["ckpt_path=x.ckpt", "opset=abc"], "opset=abc: Value 'abc' of type 'str' could not be converted to Integer"),
        (["ckpt_path=x.ckpt", "opset=7"], "opset=7 is not allowed: opset must be a whole number >= 9"),
        (["ckpt_path=x.ckpt", "mean=0.5,0.5"], "Ambiguous value for argument 'mean=0.5,0.5'"),
        (["fromat=onnx"], "unknown key 'fromat'; did you mean 'format'?"),
    ],
)
def test_cli_bad_input_is_one_line(args: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and err.count("\n") == 1


def test_cli_rejects_a_file_that_is_not_a_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bogus = tmp_path / "bogus.ckpt"
    bogus.write_bytes(b"not a checkpoint")
    assert main([f"ckpt_path={bogus}"]) == 2
    err = capsys.readouterr().err
    assert f"ckpt_path='{bogus}' is not allowed: not a readable weights file" in err and err.count("\n") == 1


def test_cli_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    text = capsys.readouterr().out
    assert "onnx | executorch | torchscript" in text and "format: onnx" in text
    assert "pip install 'mobilenet-pl[export]'" in text and "pip install 'mobilenet-pl[mobile]'" in text
    assert "DEPRECATED upstream" in text and "ExecuTorch" in text  # TorchScript's replacement is named


# -- INT8 -----------------------------------------------------------------------------------------------


def test_int8_quantization_agrees_with_fp32(tmp_path: Path) -> None:
    """A briefly trained digits model, quantized with calibration on held-out images: the int8 model's
    predictions match the fp32 model's on most test images (agreement, not speed, is asserted)."""
    from mobilenet_pl.deploy import onnx_accuracy, quantize_onnx
    from mobilenet_pl.lit.data import DigitsDataModule

    torch.manual_seed(0)
    datamodule = DigitsDataModule(resolution=32, batch_size=64, augment=False)
    datamodule.setup("fit")
    model = create_model("v2", width=0.25, num_classes=10, in_chans=1, small_input=True, dropout=0.0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-3)
    model.train()
    for _ in range(2):  # ~40 steps: clearly non-random predictions (~70% top-1) in ~15 s
        for x, y in datamodule.train_dataloader():
            loss = nn.functional.cross_entropy(model(x), y)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
    # after so few fast-moving steps the running BatchNorm statistics lag the weights: re-estimate them
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None  # cumulative average over the pass below
    with torch.no_grad():
        for x, _ in datamodule.train_dataloader():
            model(x)
    model.eval()
    fp32 = export_onnx(model, tmp_path / "digits.onnx", 32, [str(i) for i in range(10)])
    calibration = [x for x, _ in datamodule.val_dataloader()][:4]
    int8 = quantize_onnx(fp32, tmp_path / "digits.int8.onnx", calibration)
    assert read_metadata(int8)["class_names"] == [str(i) for i in range(10)]
    x, y = next(iter(datamodule.test_dataloader()))
    p32 = ort_session(fp32).run(None, {"input": x.numpy()})[0].argmax(1)
    p8 = ort_session(int8).run(None, {"input": x.numpy()})[0].argmax(1)
    assert (p32 == p8).mean() >= 0.75  # 0.86 measured on AVX2 (weak model: many near-ties)
    acc32, n = onnx_accuracy(fp32, datamodule.test_dataloader())
    assert n == len(datamodule.test_set) and acc32 > 0.5  # it did learn something


def test_quantize_cli_reports_measured_ratios_without_verdicts(
    tiny_ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from mobilenet_pl.quantize import main as quantize_main

    out = tmp_path / "tiny.int8.onnx"
    args = ["data=fake", "data.num_classes=4", "calib_batches=1", "batch_size=8", "calls=2", "repeats=1"]
    assert quantize_main([f"ckpt_path={tiny_ckpt}", *args, f"out={out}", "json=true"]) == 0
    report = json.loads(capsys.readouterr().out)
    # only the int8 model is written: the float one it is compared with lived in a temporary folder
    assert out.is_file() and sorted(p.name for p in tmp_path.iterdir()) == ["tiny.int8.onnx"]
    assert report["test_images"] == 64 and set(report["top1"]) == {"fp32", "int8"}
    assert report["size_bytes"]["int8"] < report["size_bytes"]["fp32"]
    assert report["speedup"] > 0 and "goals" not in report  # goals are in docs/performance.md
    assert read_metadata(out)["quantization"].startswith("int8 QDQ")
    wrong = quantize_main([f"ckpt_path={tiny_ckpt}", "data=fake"])  # 10 classes, the checkpoint has 4
    assert wrong == 2 and "the checkpoint expects 4 and 3" in capsys.readouterr().err
