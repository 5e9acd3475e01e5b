"""The confusion-matrix PNG: drawn by torchmetrics, never crashing on the class names a folder gives."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from PIL import Image

from mobilenet_pl.app.plots import printable, save_confusion_matrix


def test_non_utf8_folder_names_are_drawn(tmp_path: Path) -> None:
    # a Latin-1 folder name on a UTF-8 file system reaches Python with a surrogate escape
    names = [os.fsdecode(b"caf\xe9"), "b", "\u00fc"]
    assert printable(names[0]) == "caf\\xe9" and printable(names[2]) == "\u00fc"
    path = save_confusion_matrix(torch.tensor([[3, 1, 0], [0, 2, 1], [1, 0, 4]]), names, tmp_path / "cm.png")
    assert Image.open(path).size[0] > 100


def test_many_classes_without_names(tmp_path: Path) -> None:
    confusion = torch.randint(0, 5, (100, 100))
    path = save_confusion_matrix(confusion, [], tmp_path / "cm.png", "test confusion matrix")
    assert Image.open(path).size[0] > 100
