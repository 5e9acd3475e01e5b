"""Evaluation never reports numbers that mean nothing: NaN weights and other class names are refused."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from helpers import FAST, make_image_folder

from mobilenet_pl.eval import main as eval_main
from mobilenet_pl.train import main as train_main


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("eval_hostile")
    root = make_image_folder(base / "images", classes=3, per_class=4)
    args = ["data=imagefolder", f"data.root={root}", "data.num_workers=0", "data.batch_size=4", "width=0.25"]
    assert train_main([*FAST, *args, "logger=none", "test=false", f"hydra.run.dir={base / 'run'}"]) == 0
    return base / "run" / "checkpoints" / "last.ckpt", root


def eval_args(ckpt: Path, root: Path, run_dir: Path) -> list[str]:
    return [
        f"ckpt_path={ckpt}",
        "data=imagefolder",
        f"data.root={root}",
        "data.num_workers=0",
        "split=val",
        f"hydra.run.dir={run_dir}",
    ]


def error_line(capsys: pytest.CaptureFixture[str]) -> str:
    [line] = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
    return line


def test_the_trained_checkpoint_evaluates(trained: tuple[Path, Path], tmp_path: Path) -> None:
    assert eval_main(eval_args(*trained, tmp_path)) == 0  # the refusals below are not refusals of everything


def test_nan_weights_are_refused(
    trained: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ckpt, root = trained
    state = torch.load(ckpt, weights_only=True)
    name = next(k for k, v in state["state_dict"].items() if v.is_floating_point())
    state["state_dict"][name][...] = float("nan")
    broken = tmp_path / "nan.ckpt"
    torch.save(state, broken)
    assert eval_main(eval_args(broken, root, tmp_path / "run")) == 2
    line = error_line(capsys)
    assert "NaN/inf" in line and name in line
    assert not (tmp_path / "run" / "results.json").exists()


def test_other_class_names_are_refused_listing_the_differences(
    trained: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ckpt, root = trained
    other = tmp_path / "other"
    for split in ("train", "val"):
        for i, name in enumerate(["ant", "bee", "class_2"]):
            shutil.copytree(root / split / f"class_{i}", other / split / name)
    assert eval_main(eval_args(ckpt, other, tmp_path / "run")) == 2
    line = error_line(capsys)
    assert "other class names" in line and "'class_0' vs 'ant'" in line and "'class_1' vs 'bee'" in line
    assert "class_2" not in line.split("first differences")[1]
