"""Figures the apps write to files: confusion matrices (drawn by ``lit.figures``, which the W&B report shares)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the sweep report draws without torch
    from torch import Tensor

from mobilenet_pl.lit.figures import ANNOTATE_UP_TO, confusion_matrix_figure, printable, pyplot

__all__ = ["ANNOTATE_UP_TO", "confusion_matrix_figure", "printable", "pyplot", "save_confusion_matrix"]


def save_confusion_matrix(
    confusion: Tensor, class_names: Sequence[str], path: Path, title: str = "confusion matrix"
) -> Path:
    plt = pyplot()
    fig = confusion_matrix_figure(confusion, class_names, title)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
