"""Deployment: BatchNorm folding, exports with embedded metadata (ONNX, ExecuTorch ``.pte``, TorchScript),
parity checks in the export's own runtime, and INT8 (onnxruntime's static quantizer; torchao's PT2E PTQ
and QAT for ExecuTorch). Used by the export, quantize and benchmark commands."""

from mobilenet_pl.deploy.checkpoint import load_model
from mobilenet_pl.deploy.fold import fold_batchnorm
from mobilenet_pl.deploy.formats import FORMATS, export_model, read_metadata, require_format
from mobilenet_pl.deploy.metadata import build_metadata
from mobilenet_pl.deploy.onnx import export_onnx, onnx_accuracy, ort_call, ort_session, quantize_onnx
from mobilenet_pl.deploy.parity import PARITY_TOLERANCE, PTE_PARITY_TOLERANCE, check_parity, parity_tolerance
from mobilenet_pl.deploy.torchscript import export_torchscript

__all__ = [
    "FORMATS",
    "PARITY_TOLERANCE",
    "PTE_PARITY_TOLERANCE",
    "build_metadata",
    "check_parity",
    "export_model",
    "export_onnx",
    "export_torchscript",
    "fold_batchnorm",
    "load_model",
    "onnx_accuracy",
    "ort_call",
    "ort_session",
    "parity_tolerance",
    "quantize_onnx",
    "read_metadata",
    "require_format",
]
