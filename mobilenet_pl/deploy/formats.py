"""One entry for every export format: what it needs installed and how it is written."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from mobilenet_pl.app.errors import require

FORMATS = ("onnx", "executorch", "torchscript")


def require_format(fmt: str, check: bool = True) -> None:
    """Raise `MissingExtraError` (one line naming the pip command) unless ``fmt`` can be written and,
    with ``check``, run."""
    if fmt == "onnx":
        require("onnx", "format=onnx")
        if check:
            require("onnxruntime", "check=true for format=onnx")
    elif fmt == "executorch":
        from mobilenet_pl.deploy.executorch import require_executorch

        require_executorch()


def export_model(fmt: str, model: nn.Module, path: Path, resolution: int, *, opset: int, **meta: Any) -> Path:
    """Write ``model`` to ``path`` in ``fmt`` with metadata ``meta`` (see `checkpoint_export_args`)."""
    if fmt == "onnx":
        from mobilenet_pl.deploy.onnx import export_onnx

        return export_onnx(model, path, resolution, opset=opset, **meta)
    if fmt == "executorch":
        from mobilenet_pl.deploy.executorch import export_executorch

        return export_executorch(model, path, resolution, **meta)
    from mobilenet_pl.deploy.torchscript import export_torchscript

    return export_torchscript(model, path, resolution, **meta)
