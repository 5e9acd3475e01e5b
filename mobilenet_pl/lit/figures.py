"""The confusion-matrix figure (torchmetrics' plot, with class names made safe to draw), for the W&B test
report here and the apps' saved plots (``app.plots``). matplotlib is imported on first use, headless."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the sweep report draws with these helpers and never needs torch
    from torch import Tensor

ANNOTATE_UP_TO = 30  # classes; beyond this, counts and names would not fit in the cells and ticks


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the Agg backend: files and images only, never a window."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def printable(name: str) -> str:
    """A class name any renderer can draw: folder names that were not UTF-8 reach us with surrogate
    escapes (``'caf\\udce9'``), which matplotlib cannot encode; they become ``'caf\\\\xe9'``."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def confusion_matrix_figure(confusion: Tensor, class_names: Sequence[str], title: str = "confusion matrix") -> Any:
    """Counts per (true, predicted) class (``MulticlassConfusionMatrix.plot``), annotated when there are
    few classes."""
    from torchmetrics.classification import MulticlassConfusionMatrix

    plt = pyplot()
    n = len(confusion)
    few = n <= ANNOTATE_UP_TO
    names = [printable(str(c)) for c in class_names] if few and len(class_names) == n else None
    size = min(12.0, 2.0 + 0.45 * n)
    fig, ax = plt.subplots(figsize=(size, size), constrained_layout=True)
    MulticlassConfusionMatrix(num_classes=n).plot(val=confusion.cpu(), ax=ax, add_text=few, labels=names)
    if not few:
        ax.set_xticks([])
        ax.set_yticks([])
    ax.set_title(title)
    return fig
