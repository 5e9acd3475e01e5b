"""The export command's work: a checkpoint to a checked file in the chosen format, written only when complete."""

from __future__ import annotations

import sys

from omegaconf import DictConfig

from mobilenet_pl.app.config import ExportFormat, check_values
from mobilenet_pl.app.errors import CheckFailedError
from mobilenet_pl.app.runner import check_output, output_path
from mobilenet_pl.deploy.checkpoint import load_model
from mobilenet_pl.deploy.formats import export_model, require_format
from mobilenet_pl.deploy.metadata import checkpoint_export_args
from mobilenet_pl.deploy.output import staged_output
from mobilenet_pl.deploy.parity import check_parity, parity_tolerance
from mobilenet_pl.models.mobilenet import MIN_INPUT_SIZE

MIN_OPSET = 9
SUFFIX = {ExportFormat.onnx: ".onnx", ExportFormat.executorch: ".pte", ExportFormat.torchscript: ".ts"}


def export_checkpoint(cfg: DictConfig) -> None:
    """Export ``cfg.ckpt_path`` as ``conf/export.yaml`` describes; prints the parity check and the file."""
    check_values(cfg, {"opset": MIN_OPSET, "resolution": MIN_INPUT_SIZE})
    fmt = cfg.format.value
    out = check_output("out", output_path(cfg.out, cfg.ckpt_path, SUFFIX[cfg.format]), cfg.overwrite)  # writable too
    require_format(fmt, check=cfg.check)
    model, hp = load_model(cfg.ckpt_path)
    if cfg.format == ExportFormat.torchscript:  # after the checkpoint is read: a refused run is one line
        print(
            "note: TorchScript is deprecated upstream; on devices use format=executorch (ExecuTorch), "
            "on servers format=onnx",
            file=sys.stderr,
        )
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
