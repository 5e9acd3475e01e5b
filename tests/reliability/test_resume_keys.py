"""Resume never changes what the checkpoint is: a key that defines the model, the data partition or the label
set is refused in one line naming it and both values; a key that may change is used and the run says so.
The table of keys is in docs/reliability.md."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from helpers import FAST, make_image_folder

from mobilenet_pl.train import main as train_main

BASE = [*FAST, "logger=none", "test=false", "width=0.25"]


@pytest.fixture(scope="module")
def digits_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("digits") / "run"
    assert train_main([*BASE, f"hydra.run.dir={run_dir}"]) == 0
    return run_dir / "checkpoints" / "last.ckpt"


def refusal(args: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    status = train_main([*BASE, *args])
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
    assert status == 2 and len(lines) == 1, lines
    return lines[0]


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ("model.small_input=false", "model.small_input=False differs from the checkpoint's True"),
        ("model.dropout=0.1", "model.dropout=0.1 differs from the checkpoint's 0.2"),
        ("model.act_layer=relu", "model.act_layer='relu' differs from the checkpoint's 'relu6'"),
        ("resolution=48", "resolution=48 differs from the checkpoint's 32"),
        ("recipe.ema_decay=0.9", "recipe.ema_decay=0.9 differs from the checkpoint's 0.0"),
        ("data.test_fraction=0.3", "data.test_fraction=0.3 differs from the checkpoint's 0.2"),
        ("data.val_fraction=0.1", "data.val_fraction=0.1 differs from the checkpoint's 0.2"),
        ("seed=1", "seed=1 differs from the checkpoint's 0"),
    ],
)
def test_resuming_with_another_model_or_partition_is_refused_naming_the_key(
    override: str, named: str, digits_ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    line = refusal([f"hydra.run.dir={tmp_path}", f"ckpt_path={digits_ckpt}", override], capsys)
    assert named in line, line
    assert not (tmp_path / "checkpoints").exists()  # refused before any training


def test_auto_resume_gets_the_same_checks(
    digits_ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "checkpoints").mkdir()
    shutil.copy(digits_ckpt, tmp_path / "checkpoints" / "last.ckpt")  # an interrupted run: no results.json
    line = refusal([f"hydra.run.dir={tmp_path}", "data.test_fraction=0.3"], capsys)
    assert line.startswith("error: auto_resume=") and "data.test_fraction=0.3" in line, line


def test_keys_that_may_change_are_used_and_named(
    digits_ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = [f"hydra.run.dir={tmp_path}", f"ckpt_path={digits_ckpt}", "trainer.max_epochs=2"]
    assert train_main([*BASE, *args, "recipe.label_smoothing=0.2", "data.batch_size=32", "optimizer.lr=0.0123"]) == 0
    out = capsys.readouterr().out
    line = next(line for line in out.splitlines() if line.startswith("resuming "))
    for change in ("recipe.label_smoothing 0.1 -> 0.2", "trainer.max_epochs 1 -> 2", "data.batch_size 64 -> 32"):
        assert change in line, line
    assert "optimizer.lr " in line and "-> 0.0123" in line, line  # the restored schedule is rescaled


def test_another_optimizer_or_schedule_on_resume_is_refused(
    digits_ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for override in ("optimizer.weight_decay=0.5", "scheduler.warmup_epochs=3"):
        line = refusal(
            [f"hydra.run.dir={tmp_path / override.split('=')[0]}", f"ckpt_path={digits_ckpt}", override], capsys
        )
        assert f"{override.split('=')[0]}=" in line and "differs from the resumed checkpoint's" in line, line


def test_an_image_folder_resumed_with_other_classes_or_another_root_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = make_image_folder(tmp_path / "images", classes=3, per_class=4)
    run = tmp_path / "run"
    folder = ["data=imagefolder", "data.num_workers=0", "data.batch_size=4", "resolution=32"]
    assert train_main([*BASE, *folder, f"data.root={root}", f"hydra.run.dir={run}"]) == 0
    ckpt = run / "checkpoints" / "last.ckpt"
    copy = shutil.copytree(root, tmp_path / "copy")
    line = refusal([*folder, f"data.root={copy}", f"ckpt_path={ckpt}", f"hydra.run.dir={tmp_path / 'r2'}"], capsys)
    assert f"data.root={str(copy)!r} differs from the checkpoint's {str(root)!r}" in line, line
    for split in ("train", "val"):  # the same folder, a class renamed: the labels mean other things
        (copy / split / "class_0").rename(copy / split / "ant")
    line = refusal([*folder, f"data.root={copy}", f"ckpt_path={ckpt}", f"hydra.run.dir={tmp_path / 'r3'}"], capsys)
    assert "class 0 (the data's class names)='ant' differs from the checkpoint's 'class_0'" in line, line
