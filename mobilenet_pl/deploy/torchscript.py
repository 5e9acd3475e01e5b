"""TorchScript export (deprecated upstream: ExecuTorch replaces it on phones; kept for C++ servers)."""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mobilenet_pl.deploy.fold import fold_batchnorm
from mobilenet_pl.deploy.metadata import METADATA_FILE, build_metadata


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


def load_torchscript(path: str | Path, extra_files: dict[str, Any] | None = None) -> Any:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning)  # see export_torchscript
        return torch.jit.load(str(path), map_location="cpu", _extra_files=extra_files)
