"""Deployed latency: BN-folded ONNX exports in onnxruntime (fp32 and int8) vs eager PyTorch, batch 1 on the CPU."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from mobilenet_pl.app.timing import Entry, interleaved, make_group, median
from mobilenet_pl.bench.contenders import contenders, infer_call
from mobilenet_pl.bench.network import LATENCY_CALLS_PER_STEP
from mobilenet_pl.bench.step import Config


def bench_export(cfg: Config, notes: list[str]) -> dict[str, Any]:
    """Batch-1 latency (ms) of BN-folded ONNX exports in onnxruntime vs eager PyTorch, on the CPU in fp32."""
    from mobilenet_pl.deploy import export_onnx, ort_call, ort_session, quantize_onnx

    out: dict[str, Any] = {}
    x = torch.randn(1, 3, cfg.resolution, cfg.resolution, generator=torch.Generator().manual_seed(0))
    feed = {"input": x.numpy()}
    with tempfile.TemporaryDirectory(prefix="mobilenet_pl_export_") as tmp:
        for family in cfg.families:
            found, _ = contenders(family, cfg.width)
            runners: dict[str, Callable[[], Any]] = {}
            labels: dict[str, tuple[str, str]] = {}
            for c in found:
                model = c.build().eval()
                path = export_onnx(model, Path(tmp) / f"{family}_{c.key}.onnx", cfg.resolution)
                session = ort_session(path)
                runners[f"{c.key} onnx"] = ort_call(session, feed)
                labels[f"{c.key} onnx"] = (f"{c.label}, ONNX fp32 in onnxruntime", c.key)
                if c.key == "ours":
                    calib = [torch.randn(1, 3, cfg.resolution, cfg.resolution).numpy() for _ in range(4)]
                    int8 = quantize_onnx(path, Path(tmp) / f"{family}_ours_int8.onnx", calib)
                    int8_session = ort_session(int8)
                    runners["ours int8"] = ort_call(int8_session, feed)
                    labels["ours int8"] = (f"{c.label}, ONNX int8 in onnxruntime (latency only)", "reference")
                runners[f"{c.key} eager"] = infer_call(model, _cpu_fp32(cfg), x)
                labels[f"{c.key} eager"] = (f"{c.label}, eager PyTorch fp32", "reference")
            calls = cfg.steps * LATENCY_CALLS_PER_STEP
            samples = interleaved(runners, calls, cfg.repeats, cfg.warmup * LATENCY_CALLS_PER_STEP)
            entries = {
                key: Entry(labels[key][0], labels[key][1], 1e3 * median(samples[key]), [1e3 * s for s in samples[key]])
                for key in runners
            }
            out[f"{family} batch 1"] = make_group("ms", False, entries)
    notes.append(
        "export: CPU, fp32, batch 1, onnxruntime with as many threads as torch; "
        "the int8 row is calibrated on random data (latency only, see python -m mobilenet_pl.quantize for accuracy)"
    )
    return out


def _cpu_fp32(cfg: Config) -> Config:
    return Config(**{**asdict(cfg), "device": "cpu", "precision": "fp32", "channels_last": False, "compile": False})
