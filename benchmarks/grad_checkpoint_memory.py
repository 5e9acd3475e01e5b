"""Activation memory of one training step with and without gradient checkpointing, on the CPU.

Two measures, both for the same model, input and seed:

- saved: bytes of the distinct tensors autograd keeps for backward during the forward pass
  (``torch.autograd.graph.saved_tensors_hooks``; parameters excluded, storages counted once). With
  checkpointing these are the block inputs the recomputation starts from.
- peak: the highest total of CPU tensor memory allocated during forward + backward above what was live
  before the step (``torch.profiler`` memory events), so recomputation in backward is counted too.

Usage: python benchmarks/grad_checkpoint_memory.py [model] [batch] [resolution]
(default: mobilenet_pl_v2_100 8 224; any name timm.create_model knows after ``import mobilenet_pl``).
"""

from __future__ import annotations

import sys

import timm
import torch
from torch.profiler import ProfilerActivity, profile

import mobilenet_pl  # noqa: F401  (registers mobilenet_pl_* in timm)


def saved_bytes(model: torch.nn.Module, x: torch.Tensor) -> int:
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        ptr = t.untyped_storage().data_ptr()
        if ptr not in params:
            storages[ptr] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(x).sum().backward()
    return sum(storages.values())


def peak_bytes(model: torch.nn.Module, x: torch.Tensor) -> int:
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        model(x).sum().backward()
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    live = peak = 0
    for event in sorted(events, key=lambda e: e.start_ns()):
        live += event.nbytes()
        peak = max(peak, live)
    return peak


def main() -> None:
    defaults = ["mobilenet_pl_v2_100", "8", "224"]
    name, batch, size = [*sys.argv[1:], *defaults[len(sys.argv) - 1 :]][:3]
    torch.manual_seed(0)
    x = torch.randn(int(batch), 3, int(size), int(size))
    print(f"{name}, batch {batch}, {size}x{size}, train mode, CPU")
    for checkpointing in (False, True):
        model = timm.create_model(name).train()
        model.set_grad_checkpointing(checkpointing)
        saved, peak = saved_bytes(model, x), peak_bytes(model, x)
        print(f"  grad_checkpointing={checkpointing!s:5}  saved {saved / 2**20:8.1f} MiB  peak {peak / 2**20:8.1f} MiB")


if __name__ == "__main__":
    main()
