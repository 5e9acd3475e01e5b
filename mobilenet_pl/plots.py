"""Figures the apps write: confusion matrices and the accuracy vs mult-adds trade-off."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from torch import Tensor


def _pyplot():  # type: ignore[no-untyped-def]
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    return plt


def confusion_matrix_figure(confusion: Tensor, class_names: Sequence[str], title: str = "confusion matrix"):  # type: ignore[no-untyped-def]
    """Counts per (true, predicted) class, annotated when there are few classes."""
    plt = _pyplot()
    n = len(confusion)
    size = min(12.0, 2.0 + 0.45 * n)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(confusion.numpy(), cmap="Blues")
    if n <= 30:
        ticks = list(range(n))
        names = list(class_names) if len(class_names) == n else [str(i) for i in ticks]
        ax.set_xticks(ticks, names, rotation=90)
        ax.set_yticks(ticks, names)
        threshold = confusion.max().item() / 2
        for i in range(n):
            for j in range(n):
                value = int(confusion[i, j])
                if value:
                    ax.text(
                        j,
                        i,
                        value,
                        ha="center",
                        va="center",
                        fontsize=8,
                        color="white" if value > threshold else "black",
                    )
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.tight_layout()
    return fig


def save_confusion_matrix(
    confusion: Tensor, class_names: Sequence[str], path: Path, title: str = "confusion matrix"
) -> Path:
    plt = _pyplot()
    fig = confusion_matrix_figure(confusion, class_names, title)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
