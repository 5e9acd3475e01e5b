"""Timing in alternation and the table blocks of the benchmark and quantize tools.

Each call is timed by ``torch.utils.benchmark.Timer`` (CUDA-synchronising clock, torch's thread count
held); `interleaved` only decides the order: every contender is warmed up first, then each repetition
times every contender once, starting one contender later each time, so drifting machine load hits all
of them alike.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch


def interleaved(runners: dict[str, Callable[[], Any]], calls: int, repeats: int, warmup: int) -> dict[str, list[float]]:
    """Seconds per call of every runner, one sample per repetition.

    Every runner is warmed up first (``warmup`` calls: allocator, autotuning, compilation); then each
    repetition times ``calls`` calls of every runner in turn, starting one runner later each time, so no
    runner always follows the same neighbour or always runs first. (``Timer.timeit`` adds its own
    warm-up of two calls before each timed block.)
    """
    from torch.utils.benchmark import Timer  # imported here: it imports cpp_extension, which warns without CUDA

    for run in runners.values():
        for _ in range(warmup):
            run()
    threads = torch.get_num_threads()  # Timer would otherwise time with one thread
    timers = {name: Timer("run()", globals={"run": run}, num_threads=threads) for name, run in runners.items()}
    names = list(runners)
    samples: dict[str, list[float]] = {name: [] for name in names}
    for rep in range(repeats):
        shift = rep % len(names)
        for name in names[shift:] + names[:shift]:
            samples[name].append(timers[name].timeit(calls).mean)
    return samples


def median(samples: list[float]) -> float:
    return statistics.median(samples)


@dataclass
class Entry:
    """One contender's measurement: ``value`` is the median of ``samples`` in ``unit``."""

    label: str
    source: str  # "ours", a peer ("timm", "torchvision", ...) or "reference" (shown, never a peer)
    value: float
    samples: list[float] = field(default_factory=list)
    ratio_to_best_peer: float | None = None


def make_group(unit: str, higher_is_better: bool, entries: dict[str, Entry]) -> dict[str, Any]:
    """A table block: entries plus, for each, its speed relative to the fastest peer (> 1: faster)."""
    peers = {k: e for k, e in entries.items() if e.source not in ("ours", "reference")}
    best: str | None = None
    if peers:
        pick = max if higher_is_better else min
        best = pick(peers, key=lambda k: peers[k].value)
        for entry in entries.values():
            ref = peers[best].value
            speed = entry.value / ref if higher_is_better else ref / entry.value
            entry.ratio_to_best_peer = speed if entry.value > 0 else None
    return {
        "unit": unit,
        "higher_is_better": higher_is_better,
        "best_peer": best,
        "entries": {k: asdict(e) for k, e in entries.items()},
    }
