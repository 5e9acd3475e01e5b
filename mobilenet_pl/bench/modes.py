"""The benchmark's ``modes`` section: one training step of our model eager, under ``torch.compile`` and with
CUDA graphs, at each of ``modes_batches`` -- which way of running is fastest at small batches, and is it right.

- ``eager``: plain PyTorch;
- ``compile``: ``torch.compile(model)`` (TorchInductor, mode ``default``);
- ``cudagraphs``: ``torch.compile(model, mode="reduce-overhead")``: Inductor plus CUDA graphs, which
  replay a step's kernels with one launch. CUDA only: skipped with a note elsewhere.

The optimizer step stays eager in every mode, as in the training app (``compile=true`` compiles the
backbone). Every mode starts from the same weights, with dropout off, and first runs ``CHECK_STEPS``
steps on the same batch (this is also where compilation happens, timed as ``first_steps_s``).

Correctness: the first step's loss and weight update (the SGD step of the first gradients) of each mode
are compared with those of eager in float64 (the reference; autocast leaves float64 alone). A mode is
correct when its relative errors are at most ``ERROR_FACTOR`` x eager's own in the benchmark's precision:
float32 rounding alone moves the first update of a freshly initialised V2 1.0 by 0.6% (contiguous) to 3.3%
(channels-last) from float64 (measured at batch 32, 128 px), so no fixed tolerance fits every set-up; a
wrong gradient is off by far more. Later steps' losses are recorded, not checked: training amplifies
rounding differences step by step (eager contiguous vs channels-last: ~1e-3 relative after 3 steps).
Then the modes are timed in alternation like every other section; the ratios are speeds relative to eager.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from typing import Any

import torch

from mobilenet_pl.app.timing import Entry, interleaved, make_group, median
from mobilenet_pl.bench.step import FAMILIES, MODES, Config, make_batch, train_step
from mobilenet_pl.models import create_model

CHECK_STEPS = 3  # losses recorded per mode; the first step's loss and update are checked
# a mode may be this many times less accurate than eager against float64 (eager's channels-last and
# contiguous runs differ by 6x); a wrong gradient term is off by far more. TINY: eager may be exact.
ERROR_FACTOR, TINY = 10.0, 1e-7


def _first_loss_and_update(
    step: Callable[[], torch.Tensor], model: torch.nn.Module, start: list[torch.Tensor]
) -> tuple[float, torch.Tensor]:
    """Run ``step`` once; its loss and the change of ``model``'s parameters from ``start``, flat, float64."""
    loss = float(step())
    deltas = [
        (p.detach().double() - b.double()).flatten().cpu() for p, b in zip(model.parameters(), start, strict=True)
    ]
    return loss, torch.cat(deltas)


def _stepper(model: torch.nn.Module, cfg: Config, batch: Any, graphs: bool) -> Callable[[], torch.Tensor]:
    step = train_step(model, cfg, batch)
    if not graphs:
        return step

    def graphed_step() -> torch.Tensor:
        # a new iteration: the graphs' output buffers of the previous step may be overwritten
        torch.compiler.cudagraph_mark_step_begin()
        return step().clone()

    return graphed_step


def bench_modes(cfg: Config, notes: list[str]) -> dict[str, Any]:
    """ms per training step (as images/s) of each mode at each batch size, plus the loss check."""
    family = "v2" if "v2" in cfg.families else cfg.families[0]
    modes = [m for m in cfg.modes if m != "cudagraphs" or cfg.device == "cuda"]
    if len(modes) < len(cfg.modes):
        notes.append("modes: cudagraphs (torch.compile mode='reduce-overhead') needs CUDA; skipped on the CPU")
    if "eager" not in modes:
        modes.insert(0, "eager")  # the reference for the ratios and the loss check
    base = create_model(FAMILIES[family], width=cfg.width, dropout=0.0).to(cfg.device).train()
    if cfg.channels_last:
        base = base.to(memory_format=torch.channels_last)
    start = [p.detach().clone() for p in base.parameters()]
    out: dict[str, Any] = {}
    for batch_size in cfg.modes_batches:
        torch._dynamo.reset()  # each batch size compiles afresh (no dynamic-shape recompilation)
        batch = make_batch(cfg, batch_size)
        steps: dict[str, Callable[[], torch.Tensor]] = {}
        losses: dict[str, list[float]] = {}
        updates: dict[str, torch.Tensor] = {}
        first_steps: dict[str, float] = {}
        reference = copy.deepcopy(base).double()
        ref_step = train_step(reference, cfg, (batch[0].double(), batch[1]))
        ref_loss, ref_update = _first_loss_and_update(ref_step, reference, start)
        del reference, ref_step
        for mode in modes:
            model = copy.deepcopy(base)
            compile_mode = MODES[mode]
            run: torch.nn.Module = model if compile_mode is None else torch.compile(model, mode=compile_mode)  # type: ignore[assignment]
            step = _stepper(run, cfg, batch, graphs=mode == "cudagraphs")
            started = time.perf_counter()
            first_loss, updates[mode] = _first_loss_and_update(step, model, start)
            losses[mode] = [first_loss] + [float(step()) for _ in range(CHECK_STEPS - 1)]
            first_steps[mode] = time.perf_counter() - started
            steps[mode] = step
        samples = interleaved(steps, cfg.steps, cfg.repeats, cfg.warmup)
        entries = {
            mode: Entry(
                f"{FAMILIES[family]} w{cfg.width:g} training step, {mode}",
                "peer" if mode == "eager" else "ours",
                batch_size / median(samples[mode]),
                [batch_size / s for s in samples[mode]],
            )
            for mode in modes
        }
        group = make_group("images/s", True, entries)
        checks: dict[str, dict[str, Any]] = {
            mode: {
                "losses": losses[mode],
                "loss_rel_error": abs(losses[mode][0] - ref_loss) / abs(ref_loss),
                "update_rel_error": float((updates[mode] - ref_update).norm() / ref_update.norm()),
                "first_steps_s": first_steps[mode],
            }
            for mode in modes
        }
        for check in checks.values():
            check["correct"] = all(
                check[key] <= ERROR_FACTOR * max(checks["eager"][key], TINY)
                for key in ("loss_rel_error", "update_rel_error")
            )
        group["loss_check"] = {"reference_loss": ref_loss, **checks}
        out[f"{family} batch {batch_size}"] = group
        del steps
    notes.append(
        "modes: dropout off; errors are relative to eager in float64 (first step's loss, first weight update); "
        f"correct = at most {ERROR_FACTOR:g}x eager's own errors; the time shown is the first {CHECK_STEPS} steps, "
        "compilation included; 'x best peer' is x eager"
    )
    return out
