"""INT8: ``python -m mobilenet_pl.quantize ckpt_path=PATH [format=onnx|executorch] [method=ptq|qat]``.

``format=executorch`` quantizes through torchao's PT2E flow to an XNNPACK ``.pte`` (PTQ calibrated on
the validation split, or QAT fine-tuned on the training split through Lightning); ``format=onnx`` with
onnxruntime's static quantizer. Either way it reports top-1 on the test split, file sizes and batch-1
latency of float and int8 in the format's own runtime. The work is in `mobilenet_pl.deploy.quantization`;
the goals the numbers are held against are in docs/deploy.md and docs/performance.md.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence

from omegaconf import DictConfig

from mobilenet_pl.app.runner import run_tool


def quantize(cfg: DictConfig) -> None:
    # imported here, not at the top: a mistake in the config is reported before torch loads
    from mobilenet_pl.deploy.quantization import format_report, run

    report = run(cfg)
    print(json.dumps(report, indent=2) if cfg.json else format_report(report))


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m mobilenet_pl.quantize`` and the ``mobilenet-pl-quantize`` console script."""
    return run_tool("quantize", quantize, argv)


if __name__ == "__main__":
    sys.exit(main())
