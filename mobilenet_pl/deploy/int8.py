"""INT8 for ExecuTorch through torchao's PT2E flow: post-training quantization (PTQ) and the graph that
quantization-aware training (QAT) fine-tunes.

The model is captured once with ``torch.export`` (dynamic batch, so calibration and training batches of
any size run), annotated by executorch's ``XNNPACKQuantizer`` with symmetric per-channel int8 weights
and per-tensor int8 activations (`quantizer`), then

- PTQ: ``prepare_pt2e`` inserts observers, calibration batches set the activation ranges,
  ``convert_pt2e`` writes the quantize/dequantize pairs XNNPACK fuses into int8 kernels;
- QAT: ``prepare_qat_pt2e`` inserts fake quantization (and simulates the BatchNorm folding), the graph
  is fine-tuned (`mobilenet_pl.deploy.qat`), then ``convert_pt2e``.

Per-channel weight scales matter for MobileNets: a depthwise convolution's channels have very different
ranges, and one scale for all of them is the known cause of INT8 MobileNetV2 losing accuracy
(Nagel et al. 2019, https://arxiv.org/abs/1906.04721).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor, nn

from mobilenet_pl.deploy.executorch import capture, example_input, lower, require_executorch


def quantizer(qat: bool = False) -> Any:
    """executorch's ``XNNPACKQuantizer``: symmetric int8, per-channel weights (``is_qat`` for QAT)."""
    require_executorch("INT8 for ExecuTorch")
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )

    return XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True, is_qat=qat))


def _inputs(batch: Any) -> Tensor:
    return batch[0] if isinstance(batch, (tuple, list)) else batch


def prepare(model: nn.Module, in_chans: int, resolution: int, qat: bool = False) -> torch.fx.GraphModule:
    """``model`` captured with a dynamic batch and prepared for calibration (PTQ) or fine-tuning (QAT)."""
    from torchao.quantization.pt2e.quantize_pt2e import prepare_pt2e, prepare_qat_pt2e

    model = model.float().cpu().train(qat)  # QAT captures the training graph (BatchNorm in batch statistics)
    graph = capture(model, example_input(in_chans, resolution, batch_size=2), dynamic_batch=True).module()
    return (prepare_qat_pt2e if qat else prepare_pt2e)(graph, quantizer(qat))


@torch.no_grad()
def calibrate(prepared: torch.fx.GraphModule, batches: Iterable[Any]) -> int:
    """Run ``batches`` (tensors or ``(images, labels)``) through the observers; returns the image count."""
    count = 0
    for batch in batches:
        x = _inputs(batch).float()
        prepared(x)
        count += len(x)
    return count


def convert(prepared: torch.fx.GraphModule) -> torch.fx.GraphModule:
    """The int8 graph (quantize/dequantize pairs around float ops, which XNNPACK turns into int8 kernels)."""
    from torchao.quantization.pt2e import move_exported_model_to_eval
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e

    move_exported_model_to_eval(prepared)
    return convert_pt2e(prepared)


def ptq(model: nn.Module, batches: Iterable[Any], in_chans: int, resolution: int) -> torch.fx.GraphModule:
    """Post-training quantization of ``model`` calibrated on ``batches``."""
    prepared = prepare(copy.deepcopy(model).eval(), in_chans, resolution)
    if calibrate(prepared, batches) == 0:
        raise ValueError("no calibration images: the validation split is empty")
    return convert(prepared)


def drop_unused_state(graph: torch.fx.GraphModule) -> torch.fx.GraphModule:
    """Remove the parameters and buffers no node reads any more, in place.

    After ``convert_pt2e`` of a QAT graph the float BatchNorm parameters and statistics that were folded
    into the int8 weights stay attached to the module; a re-capture lifts them and ExecuTorch stores them
    as constants beside the delegate. Measured: 105 of them, 12% of a V2 0.25 program (440 -> 389 kB).
    """
    graph.graph.eliminate_dead_code()
    graph.delete_all_unused_submodules()
    graph.recompile()
    read = {node.target for node in graph.graph.nodes if node.op == "get_attr"}
    for name, _ in [*graph.named_parameters(), *graph.named_buffers()]:
        if name not in read:
            owner, _, attr = name.rpartition(".")
            delattr(graph.get_submodule(owner) if owner else graph, attr)
    return graph


def int8_pte(converted: torch.fx.GraphModule, in_chans: int, resolution: int, meta: dict[str, Any]) -> bytes:
    """The ``.pte`` bytes of a converted int8 graph: unused state dropped, re-captured at batch 1 and lowered
    to XNNPACK."""
    program = capture(drop_unused_state(converted), example_input(in_chans, resolution))
    return lower(program, meta)
