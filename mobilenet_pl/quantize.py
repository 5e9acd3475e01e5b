"""INT8 post-training quantization: ``python -m mobilenet_pl.quantize ckpt_path=PATH [calib_batches=8]``.

Exports the checkpoint to ONNX (BatchNorm folded), quantizes it statically with onnxruntime (QDQ format,
per-channel 7-bit int8 weights, uint8 activations, MinMax ranges calibrated on batches of the validation
split; why 7-bit: `mobilenet_pl.deploy`), then reports top-1 on the test split and batch-1 latency in
onnxruntime for both models, measured in alternation. It prints the measured top-1 change and speed-up;
the goals they are held against are in docs/performance.md.
"""

from __future__ import annotations

import json
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig

from mobilenet_pl.app.config import check_values
from mobilenet_pl.app.errors import require
from mobilenet_pl.app.runner import check_output, checkpoint_datamodule, output_path, run_tool

if TYPE_CHECKING:  # torch, numpy and onnxruntime load in the task: a config mistake is reported first
    import numpy as np


def batch1_latency(
    paths: dict[str, Path], example: np.ndarray, calls: int, repeats: int, threads: int | None = None
) -> dict[str, list[float]]:
    """ms per batch-1 call of each ONNX model in onnxruntime, one sample per interleaved repetition."""
    from mobilenet_pl.app.timing import interleaved
    from mobilenet_pl.deploy import ort_call, ort_session

    sessions = {key: ort_session(path, threads) for key, path in paths.items()}
    feed = {"input": example[:1]}
    samples = interleaved({k: ort_call(s, feed) for k, s in sessions.items()}, calls, repeats, calls // 5)
    return {key: [1e3 * s for s in values] for key, values in samples.items()}


def run(cfg: DictConfig) -> dict[str, Any]:
    """Export, quantize, evaluate and time; returns the report."""
    check_values(cfg, {"calib_batches": 1, "batch_size": 1, "calls": 1, "repeats": 1, "threads": 1})
    require("onnxruntime", "quantize")
    import torch

    from mobilenet_pl.deploy import export_onnx, load_model, onnx_accuracy, quantize_onnx
    from mobilenet_pl.models.registry import resolve_model_name

    threads = torch.get_num_threads() if cfg.threads is None else cfg.threads
    int8_path = output_path(cfg.out, cfg.ckpt_path, ".int8.onnx")
    base = int8_path.name.removesuffix(".onnx").removesuffix(".int8")
    fp32_path = int8_path.with_name(base + ".onnx")
    if fp32_path == int8_path:  # out=model.onnx: keep the fp32 model beside it under another name
        fp32_path = int8_path.with_name(base + ".fp32.onnx")
    model, hp = load_model(cfg.ckpt_path)
    if cfg.resolution is None:
        cfg.resolution = hp["resolution"]
    datamodule = checkpoint_datamodule(cfg.data, hp, batch_size=cfg.batch_size, num_workers=0)
    datamodule.setup("fit")
    datamodule.setup("test")
    for path in (int8_path, fp32_path):  # an earlier quantization, maybe with other settings, stays
        check_output("out", path, cfg.overwrite)
    names = hp.get("class_names") or [str(i) for i in range(hp["num_classes"])]
    name = resolve_model_name(hp["model"]["name"])
    export_onnx(model, fp32_path, cfg.resolution, names, name=name, width=hp["model"]["width"])
    calibration = (batch for _, batch in zip(range(cfg.calib_batches), datamodule.val_dataloader(), strict=False))
    quantize_onnx(fp32_path, int8_path, calibration)
    paths = {"fp32": fp32_path, "int8": int8_path}
    accuracy = {key: onnx_accuracy(path, datamodule.test_dataloader()) for key, path in paths.items()}
    example = next(iter(datamodule.test_dataloader()))[0].numpy()
    latency = batch1_latency(paths, example, cfg.calls, cfg.repeats, threads)
    medians = {key: statistics.median(values) for key, values in latency.items()}
    return {
        "checkpoint": str(Path(cfg.ckpt_path).expanduser()),
        "model": name,
        "width": hp["model"]["width"],
        "resolution": cfg.resolution,
        "data": str(cfg.data._target_).rsplit(".", 1)[-1],
        "calibration_images": min(cfg.calib_batches * cfg.batch_size, len(datamodule.val_set)),
        "test_images": accuracy["fp32"][1],
        "threads": threads,
        "paths": {key: str(path) for key, path in paths.items()},
        "top1": {key: value[0] for key, value in accuracy.items()},
        "latency_ms": medians,
        "latency_samples_ms": latency,
        "top1_change_points": 100 * (accuracy["int8"][0] - accuracy["fp32"][0]),
        "speedup": medians["fp32"] / medians["int8"],
    }


def format_report(report: dict[str, Any]) -> str:
    lines = [
        f"{report['model']} width {report['width']:g} at {report['resolution']}px, {report['data']}: "
        f"calibrated on {report['calibration_images']} val images, top-1 on {report['test_images']} test images, "
        f"latency with {report['threads']} onnxruntime threads",
        f"{'model':<6}{'top-1':>9}{'batch-1 ms':>12}  file",
    ]
    for key in ("fp32", "int8"):
        lines.append(
            f"{key:<6}{100 * report['top1'][key]:>8.2f}%{report['latency_ms'][key]:>12.3f}  {report['paths'][key]}"
        )
    lines.append(f"top-1 change int8 - fp32: {report['top1_change_points']:+.2f} points")
    lines.append(f"int8 speed-up over fp32 ONNX at batch 1: {report['speedup']:.2f}x")
    return "\n".join(lines)


def quantize(cfg: DictConfig) -> None:
    report = run(cfg)
    print(json.dumps(report, indent=2) if cfg.json else format_report(report))


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m mobilenet_pl.quantize`` and the ``mobilenet-pl-quantize`` console script."""
    return run_tool("quantize", quantize, argv)


if __name__ == "__main__":
    sys.exit(main())
