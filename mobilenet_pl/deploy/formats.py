"""One entry for every export format: what it needs installed and how it is written."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from torch import nn

from mobilenet_pl.app.errors import require
from mobilenet_pl.deploy.metadata import METADATA_FILE, decode_value

FORMATS = ("onnx", "executorch", "torchscript")


def require_format(fmt: str, check: bool = True, needed_for: str | None = None) -> None:
    """Raise `MissingExtraError` (one line naming the pip command) unless ``fmt`` can be written and,
    with ``check``, run; ``needed_for`` names the command in that line (default: the format)."""
    if fmt == "onnx":
        require("onnx", needed_for or "format=onnx")
        if check:
            require("onnxruntime", needed_for or "check=true for format=onnx")
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


def read_metadata(path: str | Path) -> dict[str, Any]:
    """Metadata of an ONNX (``.onnx``), ExecuTorch (``.pte``) or TorchScript export, values decoded (lists,
    numbers, strings)."""
    path = Path(path)
    if path.suffix == ".pte":
        from mobilenet_pl.deploy.executorch import read_pte_metadata

        return read_pte_metadata(path)
    if path.suffix == ".onnx":
        onnx = require("onnx", "reading ONNX metadata")
        model = onnx.load(str(path), load_external_data=False)
        return {prop.key: decode_value(prop.value) for prop in model.metadata_props}
    extra = {METADATA_FILE: ""}
    from mobilenet_pl.deploy.torchscript import load_torchscript

    load_torchscript(path, extra)
    return dict(json.loads(extra[METADATA_FILE])) if extra[METADATA_FILE] else {}
