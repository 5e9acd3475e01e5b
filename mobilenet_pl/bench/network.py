"""The network alone: training-step throughput and inference latency/throughput, ours vs timm vs torchvision."""

from __future__ import annotations

from typing import Any

from mobilenet_pl.app.timing import Entry, interleaved, make_group, median
from mobilenet_pl.bench.contenders import contenders, infer_call
from mobilenet_pl.bench.step import Config, make_batch, prepare, train_step

LATENCY_CALLS_PER_STEP = 10  # batch-1 calls are short: time 10 x steps of them per repetition


def bench_train(cfg: Config, notes: list[str]) -> dict[str, Any]:
    """Training-step throughput (images/s) per family: ours vs timm vs torchvision."""
    out: dict[str, Any] = {}
    for family in cfg.families:
        found, family_notes = contenders(family, cfg.width)
        notes.extend(n for n in family_notes if n not in notes)
        batch = make_batch(cfg, cfg.batch_size)
        steps = {c.key: train_step(prepare(c.build().train(), cfg), cfg, batch) for c in found}
        samples = interleaved(steps, cfg.steps, cfg.repeats, cfg.warmup)
        entries = {
            c.key: Entry(
                c.label, c.key, cfg.batch_size / median(samples[c.key]), [cfg.batch_size / s for s in samples[c.key]]
            )
            for c in found
        }
        out[family] = make_group("images/s", True, entries)
        del steps
    return out


def bench_infer(cfg: Config, notes: list[str]) -> dict[str, Any]:
    """Inference latency at batch 1 (ms) and throughput at ``infer_batch`` (images/s) per family."""
    out: dict[str, Any] = {}
    for family in cfg.families:
        found, family_notes = contenders(family, cfg.width)
        notes.extend(n for n in family_notes if n not in notes)
        models = {c.key: prepare(c.build().eval(), cfg) for c in found}
        x1, _ = make_batch(cfg, 1)
        xb, _ = make_batch(cfg, cfg.infer_batch)
        lat = interleaved(
            {k: infer_call(m, cfg, x1) for k, m in models.items()},
            cfg.steps * LATENCY_CALLS_PER_STEP,
            cfg.repeats,
            cfg.warmup * LATENCY_CALLS_PER_STEP,
        )
        thr = interleaved({k: infer_call(m, cfg, xb) for k, m in models.items()}, cfg.steps, cfg.repeats, cfg.warmup)
        out[f"{family} batch 1"] = make_group(
            "ms",
            False,
            {c.key: Entry(c.label, c.key, 1e3 * median(lat[c.key]), [1e3 * s for s in lat[c.key]]) for c in found},
        )
        n = cfg.infer_batch
        out[f"{family} batch {n}"] = make_group(
            "images/s",
            True,
            {c.key: Entry(c.label, c.key, n / median(thr[c.key]), [n / s for s in thr[c.key]]) for c in found},
        )
    return out
