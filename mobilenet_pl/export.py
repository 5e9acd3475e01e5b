"""Deployment export: ``python -m mobilenet_pl.export ckpt_path=PATH [format=onnx|executorch|torchscript] [out=PATH]``.

Loads our checkpoint, folds BatchNorm, exports with metadata (ONNX, an ExecuTorch ``.pte`` for phones,
or TorchScript, deprecated upstream) and checks the export in its own runtime against eager PyTorch. The
file is written under a temporary name and moved into place only when complete and checked. The
library behind it is `mobilenet_pl.deploy`.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from omegaconf import DictConfig

from mobilenet_pl.app.runner import run_tool


def export(cfg: DictConfig) -> None:
    # imported here, not at the top: a mistake in the config is reported before torch loads
    from mobilenet_pl.deploy.exporter import export_checkpoint

    export_checkpoint(cfg)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m mobilenet_pl.export`` and the ``mobilenet-pl-export`` console script."""
    return run_tool("export", export, argv)


if __name__ == "__main__":
    sys.exit(main())
