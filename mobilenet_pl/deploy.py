"""Deployment library: BatchNorm folding, ONNX / TorchScript export with embedded metadata, parity
checks, onnxruntime sessions and INT8 quantization. Used by the export, quantize and benchmark tools.

BatchNorm is folded into the convolution before it (`fold_batchnorm`), so the exported graph is conv ->
activation only; the batch axis stays dynamic. Metadata a deployment needs (class names, normalisation,
resolution, model name and width) travels inside the file: ONNX ``metadata_props`` or TorchScript
``_extra_files["metadata.json"]``. Read it back with `read_metadata`.

ONNX goes through the TorchScript-based exporter (``torch.onnx.export(..., dynamo=False)``): with torch
2.14 it exports a MobileNet in ~2 s with outputs equal to eager, where the ``torch.export``-based one
takes ~40 s for the same graph.

INT8 (`quantize_onnx`): uint8 activations with 7-bit int8 weights (U8S8, ``reduce_range=True``) rather
than onnxruntime's S8S8 default: AVX2 kernels without VNNI add pairs of uint8 x int8 products in int16,
which saturates with full 8-bit weights; 7-bit weights keep the sums in range (onnxruntime's documented
remedy). On the digits model (AMD EPYC, AVX2, 2 cores) top-1 was 97.77% fp32, 92.20% S8S8, 94.99% U8S8
and 97.77% U8S8 with reduce_range, which was also the fastest (docs/performance.md).
"""

from __future__ import annotations

import copy
import json
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from mobilenet_pl.errors import ConfigError, require
from mobilenet_pl.models.layers import ConvBNAct

DEFAULT_OPSET = 17
PARITY_TOLERANCE = 1e-4  # max abs logit difference accepted between the export and eager PyTorch
METADATA_FILE = "metadata.json"  # TorchScript _extra_files key
QUANTIZATION_NOTE = "int8 QDQ, per-channel 7-bit weights, uint8 activations"


def _fuse(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    # torch's fuse_conv_bn_eval folds in float32; against a float64 reference its outputs differ by
    # 5.4e-7 (MobileNetV2 1.0, batch 8 at 224 px), as close as a float64 fold (4.8e-7): no need for our own.
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError("cannot fold a BatchNorm2d without running statistics (track_running_stats=False)")
    return fuse_conv_bn_eval(conv, bn)


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """A copy of ``model`` in eval mode with every BatchNorm folded into the conv before it.

    Covers every `ConvBNAct` (``conv`` gets a bias, ``bn`` becomes ``nn.Identity``) and any
    ``nn.Sequential`` holding a Conv2d directly followed by a BatchNorm2d (torchvision's
    ``Conv2dNormActivation``), so peers can be exported the same way. Eval-mode outputs are unchanged up
    to float rounding; ``model`` itself is not modified. The copy's state dict has no ``bn`` keys, so it
    is for inference and export, not for further training.

    Example:
        >>> import torch
        >>> from mobilenet_pl import mobilenet_v2
        >>> model = mobilenet_v2(width=0.5, num_classes=10).eval()
        >>> folded = fold_batchnorm(model)
        >>> x = torch.randn(2, 3, 64, 64)
        >>> bool(torch.allclose(model(x), folded(x), atol=1e-5))
        True
        >>> any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
        False
    """
    folded = copy.deepcopy(model).eval()
    for module in list(folded.modules()):  # a list: children are replaced while walking
        if isinstance(module, ConvBNAct) and isinstance(module.bn, nn.BatchNorm2d):
            module.conv = _fuse(module.conv, module.bn)
            module.bn = nn.Identity()  # type: ignore[assignment]
        elif isinstance(module, nn.Sequential):
            for i in range(len(module) - 1):
                conv, bn = module[i], module[i + 1]
                if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                    module[i], module[i + 1] = _fuse(conv, bn), nn.Identity()
    return folded


# -- metadata -------------------------------------------------------------------------------------------


def _in_chans(model: nn.Module) -> int:
    first_conv = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    if first_conv is None:
        raise ValueError("cannot infer the input channels: the model has no Conv2d")
    return int(first_conv.in_channels)


def build_metadata(
    model: nn.Module,
    resolution: int,
    class_names: Sequence[str] | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    name: str | None = None,
    width: float | None = None,
) -> dict[str, Any]:
    """The metadata embedded in an export; keys whose value is unknown (None) are left out."""
    from mobilenet_pl import __version__

    in_chans = _in_chans(model)
    for key, values in (("mean", mean), ("std", std)):
        if values is not None and len(values) != in_chans:
            raise ValueError(f"{key} has {len(values)} values but the model takes {in_chans} input channels")
    meta: dict[str, Any] = {
        "model": name or type(model).__name__,
        "width": width,
        "resolution": int(resolution),
        "in_chans": in_chans,
        "num_classes": getattr(model, "num_classes", None),
        "class_names": list(class_names) if class_names is not None else None,
        "mean": [float(v) for v in mean] if mean is not None else None,
        "std": [float(v) for v in std] if std is not None else None,
        "input_layout": "NCHW float32, normalised per channel as (x - mean) / std",
        "producer": f"mobilenet_pl {__version__}",
    }
    return {key: value for key, value in meta.items() if value is not None}


def _encode(value: Any) -> str:
    # strings stay readable for other tools (Netron shows them as is); everything else is JSON
    return value if isinstance(value, str) else json.dumps(value)


def _decode(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def read_metadata(path: str | Path) -> dict[str, Any]:
    """Metadata of an ONNX (``.onnx``) or TorchScript export, values decoded (lists, numbers, strings)."""
    path = Path(path)
    if path.suffix == ".onnx":
        onnx = require("onnx", "reading ONNX metadata")
        model = onnx.load(str(path), load_external_data=False)
        return {prop.key: _decode(prop.value) for prop in model.metadata_props}
    extra = {METADATA_FILE: ""}
    _load_torchscript(path, extra)
    return dict(json.loads(extra[METADATA_FILE])) if extra[METADATA_FILE] else {}


# -- export ----------------------------------------------------------------------------------------------


def export_onnx(
    model: nn.Module,
    path: str | Path,
    resolution: int = 224,
    class_names: Sequence[str] | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    opset: int = DEFAULT_OPSET,
    *,
    name: str | None = None,
    width: float | None = None,
) -> Path:
    """Fold BatchNorm, export to ONNX with a dynamic batch axis and embed metadata; returns ``path``.

    The graph has one input ``input`` (N x C x resolution x resolution, float32) and one output
    ``logits``. ``name`` and ``width`` describe the model in the metadata (see `build_metadata`).
    """
    onnx = require("onnx", "ONNX export")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = build_metadata(model, resolution, class_names, mean, std, name, width)
    folded = fold_batchnorm(model).float().cpu()
    example = torch.randn(1, meta["in_chans"], resolution, resolution)
    with warnings.catch_warnings():
        # the exporter announces its own deprecation; the traced input-size check is a constant for a
        # fixed resolution, which is what the TracerWarning is about
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
        torch.onnx.export(
            folded,
            (example,),
            str(path),
            dynamo=False,
            input_names=["input"],
            output_names=["logits"],
            dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
            opset_version=opset,
            do_constant_folding=True,
        )
    proto = onnx.load(str(path))
    onnx.helper.set_model_props(proto, {key: _encode(value) for key, value in meta.items()})
    proto.doc_string = f"{meta['model']} exported by {meta['producer']}"
    onnx.save(proto, str(path))
    return path


def export_torchscript(
    model: nn.Module,
    path: str | Path,
    resolution: int = 224,
    class_names: Sequence[str] | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    *,
    name: str | None = None,
    width: float | None = None,
) -> Path:
    """Fold BatchNorm, script the model and save it with metadata in ``_extra_files``; returns ``path``.

    Scripting (not tracing) keeps any batch size and image size and the model's own input-size check.
    Load with ``torch.jit.load(path)``; read the metadata with `read_metadata`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = build_metadata(model, resolution, class_names, mean, std, name, width)
    folded = fold_batchnorm(model).float().cpu()
    with warnings.catch_warnings():
        # TorchScript is deprecated upstream (one FutureWarning per submodule) but is still what the
        # C++ and mobile runtimes load
        warnings.filterwarnings("ignore", category=FutureWarning)
        scripted = torch.jit.script(folded)
        torch.jit.save(scripted, str(path), _extra_files={METADATA_FILE: json.dumps(meta)})
    return path


def _load_torchscript(path: str | Path, extra_files: dict[str, Any] | None = None) -> Any:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning)  # see export_torchscript
        return torch.jit.load(str(path), map_location="cpu", _extra_files=extra_files)


# -- parity and runtime ----------------------------------------------------------------------------------


def ort_session(path: str | Path, threads: int | None = None) -> Any:
    """An onnxruntime CPU session; ``threads`` defaults to torch's intra-op thread count, so ONNX and
    PyTorch timings use the same cores."""
    ort = require("onnxruntime", "running ONNX models")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.log_severity_level = 3  # warnings about unused initializers are noise for users
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def ort_call(session: Any, feed: dict[str, Any]) -> Callable[[], Any]:
    """A no-argument call running ``session`` on ``feed`` (for timing loops)."""
    return lambda: session.run(None, feed)


def _example_input(model: nn.Module, resolution: int, batch_size: int, seed: int) -> Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch_size, _in_chans(model), resolution, resolution, generator=generator)


@torch.no_grad()
def check_parity(model: nn.Module, path: str | Path, resolution: int, batch_size: int = 3, seed: int = 0) -> float:
    """Max abs logit difference between eager ``model`` (eval mode) and the export at ``path`` (ONNX run in
    onnxruntime, or TorchScript), on a random batch; ``batch_size`` differs from the export's batch of 1
    so the dynamic axis is exercised."""
    model = copy.deepcopy(model).float().cpu().eval()
    x = _example_input(model, resolution, batch_size, seed)
    expected = model(x)
    if Path(path).suffix == ".onnx":
        session = ort_session(path)
        got = torch.from_numpy(session.run(None, {"input": x.numpy()})[0])
    else:
        got = _load_torchscript(path)(x)
    return float((got - expected).abs().max())


# -- checkpoints and INT8 --------------------------------------------------------------------------------


def load_model(ckpt_path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """The plain MobileNet (eval mode, EMA weights if any) and hyperparameters of our checkpoint."""
    from mobilenet_pl.lit.classifier import MobileNetClassifier

    path = Path(ckpt_path).expanduser()
    if not path.is_file():
        raise ConfigError(f"ckpt_path={str(path)!r}: no such checkpoint file")
    try:
        module = MobileNetClassifier.load_from_checkpoint(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a truncated file, someone else's checkpoint, a pickle with code in it
        raise ConfigError(
            f"ckpt_path={str(path)!r} is not a mobilenet_pl checkpoint ({err.__class__.__name__})"
        ) from err
    return module.to_model(), dict(module.hparams)


def _batches(batches: Iterable[Any]) -> Iterator[np.ndarray]:
    for batch in batches:
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        yield x.numpy() if isinstance(x, torch.Tensor) else np.asarray(x, dtype=np.float32)


def quantize_onnx(
    fp32_path: str | Path,
    int8_path: str | Path,
    calibration: Iterable[Any],
    *,
    per_channel: bool = True,
) -> Path:
    """Quantize the ONNX model at ``fp32_path`` to int8 (QDQ) at ``int8_path``; returns ``int8_path``.

    ``calibration`` yields input batches (arrays, tensors or ``(images, labels)`` pairs) whose activation
    ranges set the quantization scales: a few hundred images of the data the model will see.
    """
    require("onnxruntime.quantization", "INT8 quantization")
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quant_pre_process,
        quantize_static,
    )

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = _batches(calibration)

        def get_next(self) -> dict[str, np.ndarray] | None:
            x = next(self.batches, None)
            return None if x is None else {"input": x}

    int8_path = Path(int8_path)
    int8_path.parent.mkdir(parents=True, exist_ok=True)
    prepared = int8_path.with_name(int8_path.stem + ".pre.onnx")
    # shape inference + graph clean-up first, as onnxruntime recommends: every Conv then gets its Q/DQ pair
    quant_pre_process(str(fp32_path), str(prepared))
    try:
        quantize_static(
            str(prepared),
            str(int8_path),
            Reader(),
            quant_format=QuantFormat.QDQ,
            per_channel=per_channel,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            reduce_range=True,  # see the module docstring: no int16 saturation on AVX2
        )
    finally:
        prepared.unlink(missing_ok=True)
    _copy_metadata(fp32_path, int8_path)
    return int8_path


def _copy_metadata(source: str | Path, target: str | Path) -> None:
    onnx = require("onnx", "INT8 quantization")
    src, dst = onnx.load(str(source), load_external_data=False), onnx.load(str(target))
    props = {prop.key: prop.value for prop in src.metadata_props}
    onnx.helper.set_model_props(dst, {**props, "quantization": QUANTIZATION_NOTE})
    onnx.save(dst, str(target))


def onnx_accuracy(path: str | Path, loader: Iterable[Any]) -> tuple[float, int]:
    """Top-1 accuracy of an ONNX classifier over ``loader``'s ``(images, labels)`` batches, and the count."""
    session = ort_session(path)
    correct = total = 0
    for x, y in loader:
        predicted = session.run(None, {"input": x.numpy()})[0].argmax(axis=1)
        correct += int((predicted == y.numpy()).sum())
        total += len(y)
    return correct / max(1, total), total
