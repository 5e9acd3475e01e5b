"""The papers' architecture tables as typed rows: hold them next to the PDFs.

Architecture knobs live here, in Python; training knobs live in the YAML configs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

BlockType = Literal["ds", "ir"]


@dataclass(frozen=True)
class StageSpec:
    """One row of a paper table: ``n`` blocks of type ``block``, the first with stride ``s``.

    Attributes:
        block: ``"ds"`` (V1 depthwise separable) or ``"ir"`` (V2 inverted residual).
        t: expansion factor of the inverted residual (1 for ``"ds"``).
        c: output channels at width 1.0.
        n: number of blocks.
        s: stride of the first block.
    """

    block: BlockType
    t: int
    c: int
    n: int
    s: int


@dataclass(frozen=True)
class ArchSpec:
    """A whole network: stem channels, the stage rows and the channels of the final 1x1 conv (0: none)."""

    stem_chs: int
    stages: tuple[StageSpec, ...]
    head_chs: int


# MobileNetV1, Howard et al. 2017, Table 1: conv 3x3/s2 32, then 13 dw/pw pairs, grouped by resolution.
# The paper prints stride 2 for the last depthwise layer; the reference code (and every port) uses 1.
MOBILENET_V1 = ArchSpec(
    stem_chs=32,
    stages=(
        StageSpec("ds", 1, 64, 1, 1),
        StageSpec("ds", 1, 128, 2, 2),
        StageSpec("ds", 1, 256, 2, 2),
        StageSpec("ds", 1, 512, 6, 2),
        StageSpec("ds", 1, 1024, 2, 2),
    ),
    head_chs=0,
)

# MobileNetV2, Sandler et al. 2018, Table 2 (t, c, n, s), then conv2d 1x1 to 1280.
MOBILENET_V2 = ArchSpec(
    stem_chs=32,
    stages=(
        StageSpec("ir", 1, 16, 1, 1),
        StageSpec("ir", 6, 24, 2, 2),
        StageSpec("ir", 6, 32, 3, 2),
        StageSpec("ir", 6, 64, 4, 2),
        StageSpec("ir", 6, 96, 3, 1),
        StageSpec("ir", 6, 160, 3, 2),
        StageSpec("ir", 6, 320, 1, 1),
    ),
    head_chs=1280,
)
