"""Loading an export in the runtime that will run it (for parity checks, metadata and timing)."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch


def load_torchscript(path: str | Path, extra_files: dict[str, Any] | None = None) -> Any:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning)  # TorchScript's own deprecation notice
        return torch.jit.load(str(path), map_location="cpu", _extra_files=extra_files)
