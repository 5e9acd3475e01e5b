"""On-device formats side by side: batch-1 latency and file size of float and INT8 ExecuTorch ``.pte``
(XNNPACK), float and INT8 ONNX in onnxruntime, and torchvision's eager-mode INT8 MobileNetV2 (the
``torch.ao`` anchor), on the same input in one interleaved run.

INT8 models are calibrated on random images: the latency and size are real, the accuracy is not (see
``python -m mobilenet_pl.quantize`` for accuracy on real data). On an x86 CPU without VNNI int8 need not be
faster than float; XNNPACK's int8 kernels target ARM (what a phone's cores change is cited in
docs/deploy.md, not measured here). Not a default section: lowering two programs takes minutes on 2 cores.
"""

from __future__ import annotations

import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from mobilenet_pl.app.timing import Entry, interleaved, make_group, median
from mobilenet_pl.bench.network import LATENCY_CALLS_PER_STEP
from mobilenet_pl.bench.step import Config
from mobilenet_pl.models import create_model

CALIBRATION_BATCHES = 4


def _torchvision_int8(width: float, x: torch.Tensor) -> tuple[Callable[[], Any] | None, int, str]:
    """torchvision's quantizable MobileNetV2 through torch.ao's eager flow (fuse, prepare, random calibration,
    convert), as ``quantization.mobilenet_v2(weights=None, quantize=True)`` does; its call and state size."""
    import io

    try:
        from torchvision.models.quantization import mobilenet_v2

        with warnings.catch_warnings():  # torch.ao.quantization announces its deprecation (pytorch #153892)
            warnings.simplefilter("ignore")
            torch.backends.quantized.engine = (
                "x86" if "x86" in torch.backends.quantized.supported_engines else "qnnpack"
            )
            model = mobilenet_v2(weights=None, quantize=True, width_mult=width).eval()
            with torch.inference_mode():
                model(x)
        buffer = io.BytesIO()
        torch.save(model.state_dict(), buffer)
    except Exception as err:  # the deprecated flow may stop working in a later torch
        return None, 0, f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"

    @torch.inference_mode()
    def call() -> None:
        model(x)

    return call, buffer.getbuffer().nbytes, ""


def bench_deploy(cfg: Config, notes: list[str]) -> dict[str, Any]:
    """Batch-1 latency (ms) and file size (MB) of ours as float/INT8 .pte and ONNX, and torchvision's INT8."""
    from mobilenet_pl.deploy.executorch import export_executorch, pte_call, require_executorch
    from mobilenet_pl.deploy.int8 import calibrate, convert, int8_pte, prepare
    from mobilenet_pl.deploy.onnx import export_onnx, ort_call, ort_session, quantize_onnx
    from mobilenet_pl.deploy.quantization import set_runtime_threads

    require_executorch("the deploy section")
    generator = torch.Generator().manual_seed(0)
    res = cfg.resolution
    x = torch.randn(1, 3, res, res, generator=generator)
    calibration = [torch.randn(8, 3, res, res, generator=generator) for _ in range(CALIBRATION_BATCHES)]
    model = create_model("mobilenet_v2", width=cfg.width).eval()
    label = f"mobilenet_pl mobilenet_v2 w{cfg.width:g}"
    runners: dict[str, Callable[[], Any]] = {}
    sizes: dict[str, int] = {}
    labels: dict[str, tuple[str, str]] = {}
    with tempfile.TemporaryDirectory(prefix="mobilenet_pl_deploy_") as tmp:
        folder = Path(tmp)
        pte = export_executorch(model, folder / "float.pte", res)
        prepared = prepare(model, 3, res)
        calibrate(prepared, calibration)
        pte8 = folder / "int8.pte"
        pte8.write_bytes(int8_pte(convert(prepared), 3, res, {}))
        onnx = export_onnx(model, folder / "float.onnx", res)
        onnx8 = quantize_onnx(onnx, folder / "int8.onnx", calibration, scratch=folder)
        set_runtime_threads(cfg.threads)
        feed = {"input": x.numpy()}
        for key, path, call, text in (
            ("pte", pte, pte_call(pte, x), "ExecuTorch .pte fp32 (XNNPACK)"),
            ("pte int8", pte8, pte_call(pte8, x), "ExecuTorch .pte int8 PT2E (XNNPACK)"),
            ("onnx", onnx, ort_call(ort_session(onnx, cfg.threads), feed), "ONNX fp32 in onnxruntime"),
            ("onnx int8", onnx8, ort_call(ort_session(onnx8, cfg.threads), feed), "ONNX int8 in onnxruntime"),
        ):
            runners[key], sizes[key], labels[key] = call, path.stat().st_size, (f"{label}, {text}", "ours")
        tv_call, tv_size, why = _torchvision_int8(cfg.width, x)
        if tv_call is not None:
            runners["torchvision int8"], sizes["torchvision int8"] = tv_call, tv_size
            tv_label = f"torchvision quantization.mobilenet_v2(width_mult={cfg.width:g}) int8, torch.ao eager"
            labels["torchvision int8"] = (tv_label, "torchvision")
        else:
            notes.append(f"deploy: torchvision's INT8 mobilenet_v2 did not run on torch {torch.__version__} ({why})")
        calls = cfg.steps * LATENCY_CALLS_PER_STEP
        samples = interleaved(runners, calls, cfg.repeats, cfg.warmup * LATENCY_CALLS_PER_STEP)
    latency = {
        key: Entry(labels[key][0], labels[key][1], 1e3 * median(samples[key]), [1e3 * s for s in samples[key]])
        for key in runners
    }
    size = {key: Entry(labels[key][0], labels[key][1], sizes[key] / 1e6) for key in runners}
    notes.append(
        f"deploy: CPU, batch 1 at {res}px, {cfg.threads} threads in every runtime; int8 calibrated on random images "
        "(latency and size only); torchvision's size is its int8 state dict"
    )
    return {"v2 batch 1": make_group("ms", False, latency), "v2 file size": make_group("MB", False, size)}
