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

from mobilenet_pl.app.config import ExportFormat, check_values
from mobilenet_pl.app.errors import CheckFailedError
from mobilenet_pl.app.runner import check_output, output_path, run_tool

MIN_OPSET = 9
SUFFIX = {ExportFormat.onnx: ".onnx", ExportFormat.executorch: ".pte", ExportFormat.torchscript: ".ts"}


def export(cfg: DictConfig) -> None:
    # imported here, not at the top: a mistake in the config is reported before torch loads
    from mobilenet_pl.deploy import check_parity, export_model, load_model, parity_tolerance, require_format
    from mobilenet_pl.deploy.metadata import checkpoint_export_args
    from mobilenet_pl.deploy.output import staged_output
    from mobilenet_pl.models.mobilenet import MIN_INPUT_SIZE

    check_values(cfg, {"opset": MIN_OPSET, "resolution": MIN_INPUT_SIZE})
    fmt = cfg.format.value
    out = check_output("out", output_path(cfg.out, cfg.ckpt_path, SUFFIX[cfg.format]), cfg.overwrite)  # writable too
    require_format(fmt, check=cfg.check)
    if cfg.format == ExportFormat.torchscript:
        print(
            "note: TorchScript is deprecated upstream; on devices use format=executorch (ExecuTorch), "
            "on servers format=onnx",
            file=sys.stderr,
        )
    model, hp = load_model(cfg.ckpt_path)
    resolution = hp["resolution"] if cfg.resolution is None else cfg.resolution
    args = checkpoint_export_args(hp, cfg.mean, cfg.std)
    with staged_output("out", out, cfg.overwrite) as staged:  # moved to out only when written and checked
        export_model(fmt, model, staged, resolution, opset=cfg.opset, **args)
        if cfg.check:
            diff, tolerance = check_parity(model, staged, resolution), parity_tolerance(staged)
            print(f"parity with eager PyTorch: max abs logit difference {diff:.2e} (tolerance {tolerance:g})")
            if diff > tolerance:
                raise CheckFailedError(
                    f"{out}: the export's logits differ from eager PyTorch by {diff:.2e}; not written"
                )
        size = staged.stat().st_size
    print(f"exported {out} ({size / 1e6:.2f} MB)")


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m mobilenet_pl.export`` and the ``mobilenet-pl-export`` console script."""
    return run_tool("export", export, argv)


if __name__ == "__main__":
    sys.exit(main())
