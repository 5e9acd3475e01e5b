"""ONNX export (BatchNorm folded, metadata embedded), onnxruntime sessions and INT8 quantization.

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

import contextlib
import tempfile
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from mobilenet_pl.app.errors import require
from mobilenet_pl.deploy.fold import fold_batchnorm
from mobilenet_pl.deploy.metadata import build_metadata, encode_value

DEFAULT_OPSET = 17
QUANTIZATION_NOTE = "int8 QDQ, per-channel 7-bit weights, uint8 activations"


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
    onnx.helper.set_model_props(proto, {key: encode_value(value) for key, value in meta.items()})
    proto.doc_string = f"{meta['model']} exported by {meta['producer']}"
    onnx.save(proto, str(path))
    return path


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
    scratch: str | Path | None = None,
) -> Path:
    """Quantize the ONNX model at ``fp32_path`` to int8 (QDQ) at ``int8_path``; returns ``int8_path``.

    ``calibration`` yields input batches (arrays, tensors or ``(images, labels)`` pairs) whose activation
    ranges set the quantization scales: a few hundred images of the data the model will see. The
    pre-processed intermediate graph goes into ``scratch`` (default: a private temporary folder), never
    beside ``int8_path``, where a file of the user's could have its name.
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
    with contextlib.ExitStack() as stack:
        folder = Path(scratch) if scratch is not None else Path(stack.enter_context(tempfile.TemporaryDirectory()))
        prepared = Path(tempfile.mkdtemp(prefix="pre-", dir=folder)) / "model.pre.onnx"
        # shape inference + graph clean-up first, as onnxruntime recommends: every Conv then gets its Q/DQ pair
        quant_pre_process(str(fp32_path), str(prepared))
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
        prepared.unlink()
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
