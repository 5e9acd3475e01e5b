"""Deployment export: ``python -m mobilenet_pl.export ckpt_path=PATH [format=onnx] [out=PATH] [check=true]``.

Loads our checkpoint, folds BatchNorm, exports to ONNX or TorchScript with metadata and checks the
export against eager PyTorch. The library behind it (folding, export, metadata, parity) is
`mobilenet_pl.deploy`.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

from omegaconf import DictConfig

from mobilenet_pl.app.config import ExportFormat, check_values
from mobilenet_pl.app.errors import CheckFailedError, require
from mobilenet_pl.app.runner import check_output, output_path, run_tool

MIN_OPSET = 9


def export(cfg: DictConfig) -> None:
    # imported here, not at the top: a mistake in the config is reported before torch loads
    from mobilenet_pl.deploy import PARITY_TOLERANCE, check_parity, export_onnx, export_torchscript, load_model
    from mobilenet_pl.models.mobilenet import MIN_INPUT_SIZE
    from mobilenet_pl.models.registry import resolve_model_name

    check_values(cfg, {"opset": MIN_OPSET, "resolution": MIN_INPUT_SIZE})
    onnx = cfg.format == ExportFormat.onnx
    if onnx:
        require("onnx", "format=onnx")
    out = check_output("out", output_path(cfg.out, cfg.ckpt_path, ".onnx" if onnx else ".ts"), cfg.overwrite)
    model, hp = load_model(cfg.ckpt_path)
    resolution = hp["resolution"] if cfg.resolution is None else cfg.resolution
    mean, std = cfg.mean, cfg.std
    if hp["in_chans"] == 3 and mean is None and std is None:
        from mobilenet_pl.lit.data import IMAGENET_MEAN, IMAGENET_STD

        mean, std = list(IMAGENET_MEAN), list(IMAGENET_STD)
    names = hp.get("class_names") or [str(i) for i in range(hp["num_classes"])]
    common: dict[str, Any] = {"name": resolve_model_name(hp["model"]["name"]), "width": hp["model"]["width"]}
    if onnx:
        export_onnx(model, out, resolution, names, mean, std, cfg.opset, **common)
    else:
        export_torchscript(model, out, resolution, names, mean, std, **common)
    print(f"exported {out} ({out.stat().st_size / 1e6:.2f} MB)")
    if cfg.check:
        if onnx:
            require("onnxruntime", "check=true for format=onnx")
        diff = check_parity(model, out, resolution)
        print(f"parity with eager PyTorch: max abs logit difference {diff:.2e} (tolerance {PARITY_TOLERANCE:g})")
        if diff > PARITY_TOLERANCE:
            raise CheckFailedError(f"{out}: the export's logits differ from eager PyTorch by {diff:.2e}")


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m mobilenet_pl.export`` and the ``mobilenet-pl-export`` console script."""
    return run_tool("export", export, argv)


if __name__ == "__main__":
    sys.exit(main())
