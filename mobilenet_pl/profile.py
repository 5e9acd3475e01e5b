"""Cost report: ``python -m mobilenet_pl.profile model=v1 width=0.5 resolution=160``.

Prints parameters and mult-adds in total and per layer type (the V1 paper's Table 2), and the
depthwise-separable vs standard-convolution comparison. ``paper=true`` prints every published cost next to
ours instead; ``json=true`` prints machine-readable output.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from dataclasses import asdict

from omegaconf import DictConfig

from mobilenet_pl.app.config import check_values
from mobilenet_pl.app.runner import run_tool

PAPER_GRID = [("mobilenet_v1", w, r) for w in (1.0, 0.75, 0.5, 0.25) for r in (224, 192, 160, 128)] + [
    ("mobilenet_v2", w, 224) for w in (0.35, 0.5, 0.75, 1.0, 1.4)
]


def paper_table() -> str:
    """Our measured params / mult-adds over the papers' width x resolution grid, beside their numbers."""
    from mobilenet_pl.models import create_model
    from mobilenet_pl.models.cost import PAPER_COSTS, measure_cost

    lines = [f"{'model':<14}{'width':>6}{'res':>5}{'M madds':>9}{'paper':>7}{'M params':>10}{'paper':>7}{'params':>11}"]
    for name, width, resolution in PAPER_GRID:
        report = measure_cost(create_model(name, width=width), resolution)
        paper = PAPER_COSTS.get((name, width, resolution))
        madds, params = (f"{paper[0]:7.0f}", f"{paper[1]:7.1f}") if paper else (f"{'-':>7}", f"{'-':>7}")
        lines.append(
            f"{name:<14}{width:>6g}{resolution:>5}{report.madds / 1e6:9.1f}{madds}{report.params / 1e6:10.3f}{params}{report.params:>11,}"
        )
    return "\n".join(lines)


def profile(cfg: DictConfig) -> None:
    if cfg.paper:
        print(paper_table())
        return
    # imported here, not at the top: a mistake in the config is reported before torch loads
    from mobilenet_pl.models import create_model
    from mobilenet_pl.models.cost import measure_cost
    from mobilenet_pl.models.mobilenet import MIN_INPUT_SIZE
    from mobilenet_pl.models.registry import resolve_model_name

    check_values(cfg, {"resolution": MIN_INPUT_SIZE, "num_classes": 0}, positive=("width",))
    name = resolve_model_name(cfg.model.name)
    model = create_model(name, width=cfg.width, num_classes=cfg.num_classes, small_input=bool(cfg.model.small_input))
    report = measure_cost(model, cfg.resolution)
    if cfg.json:
        print(json.dumps({"model": name, "width": cfg.width, **asdict(report)}, indent=2))
    else:
        print(f"{name} width {cfg.width:g}, {cfg.num_classes} classes")
        print(report.format())


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m mobilenet_pl.profile`` and the ``mobilenet-pl-profile`` console script."""
    return run_tool("profile", profile, argv)


if __name__ == "__main__":
    sys.exit(main())
