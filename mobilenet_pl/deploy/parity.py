"""Parity of an export with eager PyTorch, run in the export's own runtime."""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from torch import Tensor, nn

from mobilenet_pl.deploy.metadata import in_chans
from mobilenet_pl.deploy.onnx import ort_session
from mobilenet_pl.deploy.torchscript import load_torchscript

PARITY_TOLERANCE = 1e-4  # max abs logit difference accepted between an ONNX/TorchScript export and eager
# XNNPACK reorders float sums (its own GEMM and depthwise kernels): measured ~1e-6 on the digits model
PTE_PARITY_TOLERANCE = 1e-3


def parity_tolerance(path: str | Path) -> float:
    """The max abs logit difference accepted for the export at ``path``."""
    return PTE_PARITY_TOLERANCE if Path(path).suffix == ".pte" else PARITY_TOLERANCE


def _example_input(model: nn.Module, resolution: int, batch_size: int, seed: int) -> Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch_size, in_chans(model), resolution, resolution, generator=generator)


@torch.no_grad()
def check_parity(model: nn.Module, path: str | Path, resolution: int, batch_size: int = 3, seed: int = 0) -> float:
    """Max abs logit difference between eager ``model`` (eval mode) and the export at ``path`` (ONNX run in
    onnxruntime, ``.pte`` in ExecuTorch's runtime one image at a time, or TorchScript), on a random batch;
    ``batch_size`` differs from the export's batch of 1 so a dynamic axis is exercised."""
    model = copy.deepcopy(model).float().cpu().eval()
    x = _example_input(model, resolution, batch_size, seed)
    expected = model(x)
    if Path(path).suffix == ".pte":
        from mobilenet_pl.deploy.executorch import pte_forward

        got = pte_forward(path)(x)
    elif Path(path).suffix == ".onnx":
        session = ort_session(path)
        got = torch.from_numpy(session.run(None, {"input": x.numpy()})[0])
    else:
        got = load_torchscript(path)(x)
    return float((got - expected).abs().max())
