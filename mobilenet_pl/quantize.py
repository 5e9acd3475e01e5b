"""INT8 post-training quantization: ``python -m mobilenet_pl.quantize ckpt_path=PATH [calib_batches=8]``.

Exports the checkpoint to ONNX (BatchNorm folded, `mobilenet_pl.export`), quantizes it statically with
onnxruntime (QDQ format, per-channel int8 weights, uint8 activations, MinMax ranges calibrated on
batches of the validation split), then reports top-1 on the test split and batch-1 latency in
onnxruntime for both models, measured in alternation.

uint8 activations with 7-bit int8 weights (U8S8, ``reduce_range=True``) rather than onnxruntime's S8S8
default: AVX2 kernels without VNNI add pairs of uint8 x int8 products in int16, which saturates with full
8-bit weights; 7-bit weights keep the sums in range (onnxruntime's documented remedy). On the digits
model (AMD EPYC, AVX2, 2 cores) top-1 was 97.77% fp32, 92.20% S8S8, 94.99% U8S8 and 97.77% U8S8 with
reduce_range, which was also the fastest (docs/performance.md).
"""

from __future__ import annotations

import json
import statistics
import sys
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mobilenet_pl.benchmark import interleaved
from mobilenet_pl.cli import cli_args, parse_overrides, to_bool, to_number
from mobilenet_pl.export import export_onnx, load_model, ort_call, ort_session
from mobilenet_pl.models.factory import resolve_model_name

DATASETS = ("digits", "cifar10", "cifar100", "imagefolder", "fake")
TOP1_DROP_GOAL, SPEEDUP_GOAL = 1.0, 1.5  # points of top-1, x faster than the fp32 ONNX model at batch 1


def _batches(batches: Iterable[Any]) -> Iterator[np.ndarray]:
    for batch in batches:
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        yield x.numpy() if isinstance(x, torch.Tensor) else np.asarray(x, dtype=np.float32)


def quantize_onnx(
    fp32_path: str | Path,
    int8_path: str | Path,
    calibration: Iterable[Any],
    *,
    per_channel: bool = True,
) -> Path:
    """Quantize the ONNX model at ``fp32_path`` to int8 (QDQ) at ``int8_path``; returns ``int8_path``.

    ``calibration`` yields input batches (arrays, tensors or ``(images, labels)`` pairs) whose activation
    ranges set the quantization scales: a few hundred images of the data the model will see.
    """
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quant_pre_process,
        quantize_static,
    )

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = _batches(calibration)

        def get_next(self) -> dict[str, np.ndarray] | None:
            x = next(self.batches, None)
            return None if x is None else {"input": x}

    int8_path = Path(int8_path)
    int8_path.parent.mkdir(parents=True, exist_ok=True)
    prepared = int8_path.with_name(int8_path.stem + ".pre.onnx")
    # shape inference + graph clean-up first, as onnxruntime recommends: every Conv then gets its Q/DQ pair
    quant_pre_process(str(fp32_path), str(prepared))
    try:
        quantize_static(
            str(prepared),
            str(int8_path),
            Reader(),
            quant_format=QuantFormat.QDQ,
            per_channel=per_channel,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            reduce_range=True,  # see the module docstring: no int16 saturation on AVX2
        )
    finally:
        prepared.unlink(missing_ok=True)
    _copy_metadata(fp32_path, int8_path)
    return int8_path


def _copy_metadata(source: str | Path, target: str | Path) -> None:
    import onnx

    src, dst = onnx.load(str(source), load_external_data=False), onnx.load(str(target))
    dst.ClearField("metadata_props")
    dst.metadata_props.extend(src.metadata_props)
    dst.metadata_props.add(key="quantization", value="int8 QDQ, per-channel 7-bit weights, uint8 activations")
    onnx.save(dst, str(target))


def onnx_accuracy(path: str | Path, loader: Iterable[Any]) -> tuple[float, int]:
    """Top-1 accuracy of an ONNX classifier over ``loader``'s ``(images, labels)`` batches, and the count."""
    session = ort_session(path)
    correct = total = 0
    for x, y in loader:
        predicted = session.run(None, {"input": x.numpy()})[0].argmax(axis=1)
        correct += int((predicted == y.numpy()).sum())
        total += len(y)
    return correct / max(1, total), total


def batch1_latency(
    paths: dict[str, Path], example: np.ndarray, calls: int, repeats: int, threads: int | None = None
) -> dict[str, list[float]]:
    """ms per batch-1 call of each ONNX model in onnxruntime, one sample per interleaved repetition."""
    sessions = {key: ort_session(path, threads) for key, path in paths.items()}
    feed = {"input": example[:1]}
    samples = interleaved({k: ort_call(s, feed) for k, s in sessions.items()}, calls, repeats, calls // 5)
    return {key: [1e3 * s for s in values] for key, values in samples.items()}


# -- CLI -------------------------------------------------------------------------------------------------

USAGE = """usage: python -m mobilenet_pl.quantize ckpt_path=PATH [data=digits] [root=PATH] [calib_batches=8]
                                       [batch_size=32] [out=PATH] [calls=200] [repeats=5] [threads=N] [json=false]

Exports the checkpoint to ONNX (BN folded), quantizes it to int8 with onnxruntime (static, QDQ,
per-channel weights) calibrated on calib_batches x batch_size images of the validation split, and
prints top-1 on the test split and batch-1 onnxruntime latency of the fp32 and int8 models (median of
repeats interleaved repetitions of calls calls). Defaults: data=digits (the data the checkpoint was
trained on: digits, cifar10, cifar100, imagefolder or fake; root= for image folders and CIFAR),
out=<checkpoint stem>.int8.onnx next to the checkpoint (the fp32 model goes beside it as .onnx),
threads = torch's default (onnxruntime intra-op threads for the latency measurement).
Goals: <= 1 point top-1 drop and >= 1.5x faster than fp32 at batch 1."""

DEFAULTS: dict[str, str] = {
    "ckpt_path": "",
    "data": "digits",
    "root": "",
    "calib_batches": "8",
    "batch_size": "32",
    "out": "",
    "calls": "200",
    "repeats": "5",
    "threads": "",
    "json": "false",
}


def make_datamodule(name: str, hp: dict[str, Any], batch_size: int, root: str) -> Any:
    """The DataModule a checkpoint was trained on, built without Hydra, set up for val and test."""
    from mobilenet_pl.lit import data

    common: dict[str, Any] = {"resolution": hp["resolution"], "batch_size": batch_size, "num_workers": 0}
    if name == "digits":
        datamodule: Any = data.DigitsDataModule(**common)
    elif name in ("cifar10", "cifar100"):
        datamodule = data.CIFARDataModule(name=name, root=root or "data", download=False, **common)
    elif name == "imagefolder":
        datamodule = data.ImageFolderDataModule(root=root or None, **common)
    elif name == "fake":
        datamodule = data.FakeDataModule(num_classes=hp["num_classes"], in_chans=hp["in_chans"], **common)
    else:
        raise ValueError(f"data must be one of {list(DATASETS)}, got {name!r}")
    if datamodule.num_classes != hp["num_classes"] or datamodule.in_chans != hp["in_chans"]:
        raise ValueError(
            f"data={name} has {datamodule.num_classes} classes and {datamodule.in_chans} channels; "
            f"the checkpoint expects {hp['num_classes']} and {hp['in_chans']}"
        )
    datamodule.setup("fit")
    datamodule.setup("test")
    return datamodule


def run(opts: dict[str, str]) -> dict[str, Any]:
    """The CLI's work for parsed ``opts``: export, quantize, evaluate, time; returns the report."""
    if not opts["ckpt_path"]:
        raise ValueError("ckpt_path=PATH is required (a checkpoint written by python -m mobilenet_pl.train)")
    calib_batches = int(to_number("calib_batches", opts["calib_batches"], int, 1))
    batch_size = int(to_number("batch_size", opts["batch_size"], int, 1))
    calls = int(to_number("calls", opts["calls"], int, 1))
    repeats = int(to_number("repeats", opts["repeats"], int, 1))
    threads = int(to_number("threads", opts["threads"], int, 1)) if opts["threads"] else torch.get_num_threads()
    model, hp = load_model(opts["ckpt_path"])
    datamodule = make_datamodule(opts["data"], hp, batch_size, opts["root"])
    ckpt = Path(opts["ckpt_path"]).expanduser()
    int8_path = Path(opts["out"]) if opts["out"] else ckpt.with_suffix(".int8.onnx")
    base = int8_path.name.removesuffix(".onnx").removesuffix(".int8")
    fp32_path = int8_path.with_name(base + ".onnx")
    if fp32_path == int8_path:  # out=model.onnx: keep the fp32 model beside it under another name
        fp32_path = int8_path.with_name(base + ".fp32.onnx")
    names = hp.get("class_names") or [str(i) for i in range(hp["num_classes"])]
    name = resolve_model_name(hp["model"]["name"])
    export_onnx(model, fp32_path, hp["resolution"], names, name=name, width=hp["model"]["width"])
    calibration = (batch for i, batch in zip(range(calib_batches), datamodule.val_dataloader(), strict=False))
    quantize_onnx(fp32_path, int8_path, calibration)
    paths = {"fp32": fp32_path, "int8": int8_path}
    accuracy = {key: onnx_accuracy(path, datamodule.test_dataloader()) for key, path in paths.items()}
    example = next(iter(datamodule.test_dataloader()))[0].numpy()
    latency = batch1_latency(paths, example, calls, repeats, threads)
    medians = {key: statistics.median(values) for key, values in latency.items()}
    drop = 100 * (accuracy["fp32"][0] - accuracy["int8"][0])
    speedup = medians["fp32"] / medians["int8"]
    return {
        "checkpoint": str(ckpt),
        "model": name,
        "width": hp["model"]["width"],
        "resolution": hp["resolution"],
        "data": opts["data"],
        "calibration_images": min(calib_batches * batch_size, len(datamodule.val_set)),
        "test_images": accuracy["fp32"][1],
        "threads": threads,
        "paths": {key: str(path) for key, path in paths.items()},
        "top1": {key: value[0] for key, value in accuracy.items()},
        "latency_ms": medians,
        "latency_samples_ms": latency,
        "top1_drop_points": drop,
        "speedup": speedup,
        "goals": {"top1_drop_ok": drop <= TOP1_DROP_GOAL, "speedup_ok": speedup >= SPEEDUP_GOAL},
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
    goals = report["goals"]
    lines.append(
        f"top-1 change {0.0 - report['top1_drop_points']:+.2f} points (goal: drop <= {TOP1_DROP_GOAL:g}): "
        f"{'PASS' if goals['top1_drop_ok'] else 'FAIL'}"
    )
    lines.append(
        f"int8 speed-up {report['speedup']:.2f}x over fp32 ONNX (goal >= {SPEEDUP_GOAL:g}x): "
        f"{'PASS' if goals['speedup_ok'] else 'FAIL'}"
    )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = cli_args(argv, USAGE)
    if args is None:
        return 0
    try:
        opts = parse_overrides(args, DEFAULTS)
        as_json = to_bool("json", opts["json"])
        report = run(opts)
    except (ValueError, ImportError, RuntimeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(report, indent=2) if as_json else format_report(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
