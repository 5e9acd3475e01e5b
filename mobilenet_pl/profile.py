"""Cost report: ``python -m mobilenet_pl.profile model=v1 width=0.5 resolution=160``.

Prints parameters and mult-adds in total and per layer type (the V1 paper's Table 2), and the
depthwise-separable vs standard-convolution comparison. ``paper`` prints every published cost next to
ours instead; ``json=true`` prints machine-readable output.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from dataclasses import asdict

from mobilenet_pl.cli import cli_args, parse_overrides, to_bool, to_number
from mobilenet_pl.models import create_model
from mobilenet_pl.models.cost import PAPER_COSTS, measure_cost
from mobilenet_pl.models.factory import resolve_model_name

USAGE = """usage: python -m mobilenet_pl.profile [model=v1|v2] [width=1.0] [resolution=224] [num_classes=1000]
                                      [small_input=false] [json=false]
       python -m mobilenet_pl.profile paper      # every published cost of both papers beside ours

Counts parameters and mult-adds (torch FlopCounterMode) per layer type, as in the MobileNetV1 paper's
Table 2, and compares the depthwise separable layers with standard 3x3 convolutions (1/N + 1/Dk^2)."""

DEFAULTS: dict[str, str] = {
    "model": "v2",
    "width": "1.0",
    "resolution": "224",
    "num_classes": "1000",
    "small_input": "false",
    "json": "false",
}


PAPER_GRID = [("mobilenet_v1", w, r) for w in (1.0, 0.75, 0.5, 0.25) for r in (224, 192, 160, 128)] + [
    ("mobilenet_v2", w, 224) for w in (0.35, 0.5, 0.75, 1.0, 1.4)
]


def paper_table() -> str:
    """Our measured params / mult-adds over the papers' width x resolution grid, beside their numbers."""
    lines = [f"{'model':<14}{'width':>6}{'res':>5}{'M madds':>9}{'paper':>7}{'M params':>10}{'paper':>7}{'params':>11}"]
    for name, width, resolution in PAPER_GRID:
        report = measure_cost(create_model(name, width=width), resolution)
        paper = PAPER_COSTS.get((name, width, resolution))
        madds, params = (f"{paper[0]:7.0f}", f"{paper[1]:7.1f}") if paper else (f"{'-':>7}", f"{'-':>7}")
        lines.append(
            f"{name:<14}{width:>6g}{resolution:>5}{report.madds / 1e6:9.1f}{madds}{report.params / 1e6:10.3f}{params}{report.params:>11,}"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = cli_args(argv, USAGE)
    if args is None:
        return 0
    try:
        if args == ["paper"]:
            print(paper_table())
            return 0
        opts = parse_overrides(args, DEFAULTS)
        name = resolve_model_name(opts["model"])
        width = to_number("width", opts["width"], float, 0, inclusive=False)
        resolution = int(to_number("resolution", opts["resolution"], int, 32))
        num_classes = int(to_number("num_classes", opts["num_classes"], int, 0))
        model = create_model(
            name, width=width, num_classes=num_classes, small_input=to_bool("small_input", opts["small_input"])
        )
        report = measure_cost(model, resolution)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if to_bool("json", opts["json"]):
        print(json.dumps({"model": name, "width": width, **asdict(report)}, indent=2))
    else:
        print(f"{name} width {width:g}, {num_classes} classes")
        print(report.format())
    return 0


if __name__ == "__main__":
    sys.exit(main())
