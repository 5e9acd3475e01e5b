"""What ``python -m mobilenet_pl.quantize`` does: INT8 from a checkpoint, evaluated and timed against float.

- ``format=executorch``: torchao PT2E (`mobilenet_pl.deploy.int8`), ``method=ptq`` calibrated on the
  validation split or ``method=qat`` fine-tuned on the training split (`mobilenet_pl.deploy.qat`), lowered
  to an XNNPACK ``.pte``. Top-1 and latency are measured in ExecuTorch's runtime.
- ``format=onnx``: onnxruntime's static quantizer on the BatchNorm-folded ONNX export (`quantize_onnx`),
  calibrated on the validation split. Top-1 and latency in onnxruntime.

Only the int8 file (and, for QAT, its run dir) is written where the user asked; the float model it is
compared with is built in a private temporary folder and removed. Outputs are checked before any work
and moved into place only when complete (`mobilenet_pl.deploy.output`).
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from mobilenet_pl.app.config import check_values
from mobilenet_pl.app.errors import ConfigError
from mobilenet_pl.app.runner import check_output, check_writable, checkpoint_datamodule, output_path
from mobilenet_pl.app.timing import interleaved
from mobilenet_pl.deploy.checkpoint import load_model
from mobilenet_pl.deploy.formats import require_format
from mobilenet_pl.deploy.metadata import build_metadata, checkpoint_export_args
from mobilenet_pl.deploy.output import scratch_dir, staged_output

SUFFIX = {"executorch": ".pte", "onnx": ".onnx"}


def check_data_matches(datamodule: Any, hp: dict[str, Any], resolution: int) -> None:
    """Calibration/fine-tuning images must be what the model takes: channels and side (classes are
    checked by `checkpoint_datamodule`)."""
    x, _ = next(iter(datamodule.val_dataloader()))
    want = (hp["in_chans"], resolution, resolution)
    if tuple(x.shape[1:]) != want:
        shape = "x".join(str(v) for v in x.shape[1:])
        raise ConfigError(
            f"the data's images are {shape} (CxHxW) but the checkpoint's model takes {'x'.join(map(str, want))}: "
            "set data/resolution to match the checkpoint"
        )


def set_runtime_threads(threads: int) -> None:
    """XNNPACK's thread pool in ExecuTorch's Python runtime (it defaults to every core)."""
    try:
        from executorch.extension.pybindings.portable_lib import _unsafe_reset_threadpool
    except ImportError:  # an older runtime: its own default
        return
    from mobilenet_pl.deploy.executorch import quiet_native_stderr

    with quiet_native_stderr():
        _unsafe_reset_threadpool(threads)


def _latency(runners: dict[str, Callable[[], Any]], calls: int, repeats: int) -> dict[str, list[float]]:
    samples = interleaved(runners, calls, repeats, max(1, calls // 5))
    return {key: [1e3 * s for s in values] for key, values in samples.items()}


def _qat_dir(cfg: DictConfig, out: Path) -> Path:
    return Path(cfg.qat_dir).expanduser() if cfg.qat_dir else out.with_name(out.name + ".qat")


def run(cfg: DictConfig) -> dict[str, Any]:
    """Quantize, evaluate and time; returns the report (see `format_report`)."""
    bounds: dict[str, float] = {"calib_batches": 1, "batch_size": 1, "calls": 1, "repeats": 1, "threads": 1}
    bounds.update({"qat_epochs": 1, "qat_freeze_bn_epoch": 0, "qat_freeze_observer_epoch": 0})
    check_values(cfg, bounds, positive=("qat_lr",))
    fmt, method = cfg.format.value, cfg.method.value
    if method == "qat" and fmt != "executorch":
        raise ConfigError("method=qat is not allowed with format=onnx: QAT goes through PT2E to format=executorch")
    threads = torch.get_num_threads() if cfg.threads is None else cfg.threads
    out = check_output("out", output_path(cfg.out, cfg.ckpt_path, ".int8" + SUFFIX[fmt]), cfg.overwrite)
    qat_dir = _qat_dir(cfg, out) if method == "qat" else None
    if qat_dir is not None and cfg.qat_ckpt_path is None and qat_dir.exists() and any(qat_dir.iterdir()):
        raise ConfigError(
            f"qat_dir={str(qat_dir)!r} is not allowed: it holds an earlier QAT run; resume it with "
            f"qat_ckpt_path={qat_dir / 'checkpoints' / 'last.ckpt'} or choose another qat_dir"
        )
    if qat_dir is not None:
        check_writable("qat_dir", qat_dir / "last.ckpt")
    require_format(
        fmt, needed_for="quantize"
    )  # after the output checks: a refused output answers before the heavy imports
    model, hp = load_model(cfg.ckpt_path)
    if cfg.resolution is None:  # the data configs follow ${resolution}: the checkpoint's
        cfg.resolution = hp["resolution"]
    resolution = int(cfg.resolution)
    if resolution != hp["resolution"] and fmt == "executorch":
        raise ConfigError(
            f"resolution={resolution} is not allowed for format=executorch: the checkpoint was trained at "
            f"{hp['resolution']} and the .pte's input side is fixed"
        )
    datamodule = checkpoint_datamodule(cfg.data, hp, batch_size=cfg.batch_size, num_workers=0)
    datamodule.setup("fit")
    datamodule.setup("test")
    check_data_matches(datamodule, hp, resolution)
    args = checkpoint_export_args(hp)
    meta = build_metadata(model, resolution, **args)
    calibration = [b for _, b in zip(range(cfg.calib_batches), datamodule.val_dataloader(), strict=False)]
    report: dict[str, Any] = {
        "checkpoint": str(Path(cfg.ckpt_path).expanduser()),
        "format": fmt,
        "method": method,
        "model": args["name"],
        "width": hp["model"]["width"],
        "resolution": resolution,
        "data": str(cfg.data._target_).rsplit(".", 1)[-1],
        "threads": threads,
    }
    test = datamodule.test_dataloader()
    example = next(iter(test))[0][:1].contiguous()
    with scratch_dir() as scratch, staged_output("out", out, cfg.overwrite) as staged:
        fp32 = scratch / ("float" + SUFFIX[fmt])
        if fmt == "onnx":
            from mobilenet_pl.deploy.onnx import export_onnx, onnx_accuracy, ort_call, ort_session, quantize_onnx

            export_onnx(model, fp32, resolution, **args)
            quantize_onnx(fp32, staged, calibration, scratch=scratch)
            accuracy = {key: onnx_accuracy(path, test) for key, path in (("fp32", fp32), ("int8", staged))}
            feed = {"input": example.numpy()}
            runners = {key: ort_call(ort_session(p, threads), feed) for key, p in (("fp32", fp32), ("int8", staged))}
            report["calibration_images"] = sum(len(b[0]) for b in calibration)
        else:
            from mobilenet_pl.deploy.executorch import export_executorch, pte_accuracy, pte_call
            from mobilenet_pl.deploy.int8 import calibrate, convert, int8_pte, prepare

            export_executorch(model, fp32, resolution, **args)
            if method == "ptq":
                prepared = prepare(model, hp["in_chans"], resolution)
                report["calibration_images"] = calibrate(prepared, calibration)
            else:
                from mobilenet_pl.deploy.qat import fine_tune

                assert qat_dir is not None
                prepared = prepare(model, hp["in_chans"], resolution, qat=True)
                report["qat"] = fine_tune(prepared, datamodule, cfg, qat_dir)
            staged.write_bytes(
                int8_pte(convert(prepared), hp["in_chans"], resolution, {**meta, "quantization": method})
            )
            accuracy = {key: pte_accuracy(path, test) for key, path in (("fp32", fp32), ("int8", staged))}
            set_runtime_threads(threads)
            runners = {key: pte_call(path, example) for key, path in (("fp32", fp32), ("int8", staged))}
        latency = _latency(runners, cfg.calls, cfg.repeats)
        sizes = {"fp32": fp32.stat().st_size, "int8": staged.stat().st_size}
    medians = {key: statistics.median(values) for key, values in latency.items()}
    report.update(
        {
            "test_images": accuracy["fp32"][1],
            "paths": {"fp32": "(temporary, removed)", "int8": str(out)},
            "top1": {key: value[0] for key, value in accuracy.items()},
            "size_bytes": sizes,
            "size_ratio": sizes["int8"] / sizes["fp32"],
            "latency_ms": medians,
            "latency_samples_ms": latency,
            "top1_change_points": 100 * (accuracy["int8"][0] - accuracy["fp32"][0]),
            "speedup": medians["fp32"] / medians["int8"],
        }
    )
    return report


def format_report(report: dict[str, Any]) -> str:
    runtime = "ExecuTorch (XNNPACK)" if report["format"] == "executorch" else "onnxruntime"
    how = f"calibrated on {report['calibration_images']} val images" if "calibration_images" in report else ""
    if "qat" in report:
        qat = report["qat"]
        how = f"QAT fine-tuned {qat['epochs']} epochs (run dir {qat['dir']})"
    lines = [
        f"{report['model']} width {report['width']:g} at {report['resolution']}px, {report['data']}, "
        f"{report['method'].upper()} to {report['format']}: {how}; top-1 on {report['test_images']} test images, "
        f"batch-1 latency in {runtime} with {report['threads']} threads",
        f"{'model':<6}{'top-1':>9}{'size MB':>10}{'batch-1 ms':>12}  file",
    ]
    for key in ("fp32", "int8"):
        lines.append(
            f"{key:<6}{100 * report['top1'][key]:>8.2f}%{report['size_bytes'][key] / 1e6:>10.3f}"
            f"{report['latency_ms'][key]:>12.3f}  {report['paths'][key]}"
        )
    lines.append(f"top-1 change int8 - fp32: {report['top1_change_points']:+.2f} points")
    lines.append(f"int8 size / fp32 size: {report['size_ratio']:.2f}x")
    lines.append(f"int8 speed-up over fp32 at batch 1: {report['speedup']:.2f}x")
    return "\n".join(lines)
