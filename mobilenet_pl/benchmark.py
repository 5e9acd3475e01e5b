"""Speed benchmark: ``python -m mobilenet_pl.benchmark [family=all] [device=cpu] [sections=[...]] [json=PATH]``.

Measures, in one run, our MobileNets against timm's and torchvision's at the same width: training-step
and inference throughput, batch-1 latency, the Lightning loop's per-step overhead over a plain PyTorch
loop, the input pipeline, and deployed (ONNX Runtime) latency. Contenders are measured in alternation:
every contender is warmed up first, then each repetition times every contender once, in an order that
rotates between repetitions, so drifting machine load hits all of them alike; the median repetition is
reported (`mobilenet_pl.app.timing`). Ratios are speeds relative to the best peer (> 1: faster than it);
the goals they are held against live in docs/performance.md, not here.

The table is ours, not ``torch.utils.benchmark.Compare``: Compare shows times only, and our blocks mix
throughput (images/s) and latency (ms) and add each contender's speed relative to the best peer.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from omegaconf import DictConfig

from mobilenet_pl.app.runner import run_tool


def benchmark(dcfg: DictConfig) -> None:
    # imported here, not at the top: a mistake in the config is reported before torch loads
    from mobilenet_pl.bench.run import print_report, run
    from mobilenet_pl.bench.settings import settings

    cfg = settings(dcfg)
    print_report(cfg, run(cfg))


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m mobilenet_pl.benchmark`` and the ``mobilenet-pl-benchmark`` console script."""
    return run_tool("benchmark", benchmark, argv)


if __name__ == "__main__":
    sys.exit(main())
