"""Hostile data: corrupt and oversized images, odd pixel formats, odd folder names, symlink loops, bad splits."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from helpers import FAST, make_image_folder, run_cli, run_ok
from PIL import Image
from torch.utils.data import DataLoader

from mobilenet_pl.app.ddp_job import EVAL_CHECKS_ENV, hand_on_eval_checks, take_eval_checks
from mobilenet_pl.lit.data import (
    IGNORE_INDEX,
    CorruptImageError,
    DigitsDataModule,
    EvalShard,
    FakeDataModule,
    ImageDataModule,
    ImageFolderDataModule,
    ImageFolderSplit,
    eval_checks,
)
from mobilenet_pl.lit.data import folder as image_folder
from mobilenet_pl.lit.data.images import UnreadableImage, load_rgb

SMALL_RUN = ["resolution=32", "width=0.25", "logger=none", "data.batch_size=4", "data.num_workers=0", *FAST]


def data_modules(tmp_path: Path) -> dict[str, ImageDataModule]:
    """One DataModule per data option that runs offline (CIFAR needs its real files)."""
    root = make_image_folder(tmp_path / "images", classes=3, per_class=3)
    return {
        "digits": DigitsDataModule(batch_size=16),
        "fake": FakeDataModule(val_size=7, test_size=7, batch_size=4),
        "imagefolder": ImageFolderDataModule(root=str(root), resolution=32, batch_size=4, num_workers=0),
    }


@pytest.mark.parametrize("world", [2, 3])
@pytest.mark.parametrize("name", ["digits", "fake", "imagefolder"])
def test_eval_shards_of_every_data_set_collate_with_their_top_ups(name: str, world: int, tmp_path: Path) -> None:
    # a DDP crash once: a top-up's int label next to a data set's tensor label does not collate
    datamodule = data_modules(tmp_path)[name]
    datamodule.setup("fit")
    for split in (datamodule.val_set, datamodule.test_set):
        assert split is not None
        labels = [label for _, label in split]  # type: ignore[attr-defined]
        assert all(type(label) is int for label in labels), f"{name}: labels must be int like torchvision's"
        seen = []
        for rank in range(world):
            for _, y in DataLoader(EvalShard(split, rank, world), batch_size=len(split)):  # type: ignore[arg-type]
                seen += [int(v) for v in y if v != IGNORE_INDEX]
        assert sorted(seen) == sorted(labels)


def test_split_is_the_documented_seeded_one() -> None:
    datamodule = DigitsDataModule()
    datamodule.setup("fit")
    sizes = [len(s) for s in (datamodule.train_set, datamodule.val_set, datamodule.test_set)]  # type: ignore[arg-type]
    assert sizes == [1079, 359, 359]  # docs/training.md quotes these numbers


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"val_fraction": -0.1}, "data.val_fraction=-0.1"),
        ({"val_fraction": 1.0}, "data.val_fraction=1.0"),
        ({"test_fraction": 0.0}, "data.test_fraction=0.0"),
        ({"test_fraction": 1e-6}, "data.test_fraction=1e-06"),
        ({"val_fraction": 0.6, "test_fraction": 0.5}, "data.val_fraction + data.test_fraction"),
    ],
)
def test_bad_split_fractions_are_refused_naming_the_key(kwargs: dict[str, float], key: str) -> None:
    with pytest.raises(ValueError, match=key.replace("+", r"\+")):
        DigitsDataModule(**kwargs)


def test_bad_split_fraction_is_one_line_before_any_work(tmp_path: Path) -> None:
    proc = run_cli("mobilenet_pl.train", "data.test_fraction=0", "logger=none", cwd=tmp_path)
    assert proc.returncode == 2
    assert "error: data.test_fraction=0 is not allowed" in proc.stderr and "Traceback" not in proc.stderr
    assert not list(tmp_path.glob("outputs/*/*/checkpoints"))


def corrupt(folder: Path, names: list[str]) -> None:
    for name in names:
        (folder / name).write_bytes(b"\xff\xd8 not a jpeg")


@pytest.mark.parametrize("num_workers", [0, 2])
def test_corrupt_eval_images_are_left_out_so_evaluation_stays_exact(
    num_workers: int, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = make_image_folder(tmp_path / "images", classes=2, per_class=4, splits=("train", "val", "test"))
    corrupt(root / "val" / "class_0", ["img_1.jpg"])
    corrupt(root / "test" / "class_1", ["img_0.jpg", "img_3.jpg"])
    datamodule = ImageFolderDataModule(root=str(root), resolution=32, batch_size=3, num_workers=num_workers)
    with caplog.at_level(logging.WARNING, logger="mobilenet_pl"):
        datamodule.setup("fit")
    assert "skipping corrupt image" in caplog.text and "img_3.jpg" in caplog.text
    # every image read once, none twice: the labels are exactly those of the readable files
    test_labels = [int(v) for _, y in datamodule.test_dataloader() for v in y]
    assert sorted(test_labels) == [0, 0, 0, 0, 1, 1]
    assert sum(len(y) for _, y in datamodule.val_dataloader()) == 7
    assert datamodule.skipped_images() == {"train": 0, "val": 1, "test": 2}


def test_corrupt_training_images_are_replaced_logged_and_counted_over_workers(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = make_image_folder(tmp_path / "images", classes=2, per_class=4)
    corrupt(root / "train" / "class_1", ["img_2.jpg"])
    datamodule = ImageFolderDataModule(root=str(root), resolution=32, batch_size=4, num_workers=2)
    datamodule.setup("fit")
    with caplog.at_level(logging.WARNING, logger="mobilenet_pl"):
        for _ in range(2):
            assert sum(len(y) for _, y in datamodule.train_dataloader()) == 8  # (evaluated: left out instead)
    assert datamodule.skipped_images() == {"train": 2, "val": 0, "test": 0}  # one per read, both epochs


def test_corrupt_image_notices_are_logged_even_with_warnings_ignored(tmp_path: Path) -> None:
    root = make_image_folder(tmp_path / "images", classes=2, per_class=4, splits=("train", "val", "test"))
    corrupt(root / "train" / "class_1", ["img_3.jpg"])
    corrupt(root / "test" / "class_0", ["img_2.jpg"])
    args = ["data=imagefolder", f"data.root={root}", *SMALL_RUN]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(
        [sys.executable, "-W", "ignore", "-m", "mobilenet_pl.train", *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout + proc.stderr
    assert "skipping corrupt image" in out and "train/class_1/img_3.jpg" in out and "test/class_0/img_2.jpg" in out
    results = json.loads(next(tmp_path.glob("outputs/*/*/results.json")).read_text())
    assert results["test_samples"] == 7
    assert results["skipped_images"] == {"train": 1, "val": 0, "test": 1}
    assert "unreadable   train 1, val 0, test 1" in proc.stdout  # the summary


def test_corrupt_image_fatal_option_stops_before_training_naming_the_file(tmp_path: Path) -> None:
    root = make_image_folder(tmp_path / "images", classes=2, per_class=2)
    (root / "val" / "class_0" / "img_0.jpg").write_bytes(b"garbage")
    with pytest.raises(CorruptImageError, match=r"corrupt or unreadable image .*val/class_0/img_0.jpg"):
        ImageFolderDataModule(root=str(root), resolution=32, on_corrupt="error").setup("fit")
    proc = run_cli(
        "mobilenet_pl.train", "data=imagefolder", f"data.root={root}", "data.on_corrupt=error", *SMALL_RUN, cwd=tmp_path
    )
    assert proc.returncode == 2 and "error: corrupt or unreadable image" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_decompression_bomb_is_skipped_like_any_corrupt_image(tmp_path: Path) -> None:
    root = make_image_folder(tmp_path / "images", classes=2, per_class=3)
    bomb = Image.new("1", (15000, 15000))  # 225 Mpixel, 27 KB as PNG
    bomb.save(root / "train" / "class_0" / "bomb.png")
    bomb.save(root / "val" / "class_1" / "bomb.png")
    proc = run_ok("mobilenet_pl.train", "data=imagefolder", f"data.root={root}", *SMALL_RUN, cwd=tmp_path)
    assert "decompression bomb" in proc.stdout + proc.stderr
    results = json.loads(next(tmp_path.glob("outputs/*/*/results.json")).read_text())
    assert results["test_samples"] == 6  # the bomb is not evaluated


def test_non_utf8_class_folder_names_train_test_and_write_results(tmp_path: Path) -> None:
    root = make_image_folder(tmp_path / "images", classes=2, per_class=3)
    for split in ("train", "val"):
        os.rename(root / split / "class_1", os.fsdecode(os.fsencode(root / split) + b"/caf\xe9"))
    datamodule = ImageFolderDataModule(root=str(root), resolution=32)
    assert datamodule.class_names == ["caf\\xe9", "class_0"]
    json.dumps(datamodule.class_names).encode("utf-8")  # printable and storable
    run_ok("mobilenet_pl.train", "data=imagefolder", f"data.root={root}", *SMALL_RUN, cwd=tmp_path)
    run = next(tmp_path.glob("outputs/*/*"))
    assert (run / "results.json").is_file() and (run / "confusion_matrix.png").is_file()


def test_symlink_loop_does_not_multiply_a_class(tmp_path: Path) -> None:
    root = make_image_folder(tmp_path / "images", classes=2, per_class=3)
    os.symlink("..", root / "train" / "class_0" / "loop")  # class_0/loop -> train/ (holds class_0 again)
    os.symlink(".", root / "train" / "class_1" / "self")
    datamodule = ImageFolderDataModule(root=str(root), resolution=32)
    datamodule.setup("fit")
    train = datamodule.train_set
    targets = [target for _, target in train.samples]  # type: ignore[union-attr]
    # class_0 gains class_1's files through the loop (they are inside the linked folder), each once
    assert targets.count(1) == 3 and targets.count(0) == 6


def pixels(image: Image.Image) -> np.ndarray[Any, Any]:
    return np.asarray(image, dtype=np.float64)


def test_16_bit_png_keeps_its_range(tmp_path: Path) -> None:
    ramp = np.linspace(0, 65535, 64 * 64).reshape(64, 64).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "deep.png")
    rgb = load_rgb(tmp_path / "deep.png")
    assert rgb.mode == "RGB"
    assert np.abs(pixels(rgb)[..., 0] - ramp / 257.0).max() <= 0.5  # not clipped to white
    assert 120 < pixels(rgb).mean() < 135


def test_float_tiff_keeps_its_range_or_is_refused(tmp_path: Path) -> None:
    ramp = np.linspace(0, 1, 64 * 64).reshape(64, 64).astype(np.float32)
    Image.fromarray(ramp).save(tmp_path / "unit.tiff")
    assert np.abs(pixels(load_rgb(tmp_path / "unit.tiff"))[..., 1] - ramp * 255).max() <= 0.5  # not black
    Image.fromarray(ramp * 1000).save(tmp_path / "wild.tiff")
    with pytest.raises(UnreadableImage, match=r"float pixels in \[0, 1000\]"):
        load_rgb(tmp_path / "wild.tiff")


def test_image_folder_reads_16_bit_images_scaled(tmp_path: Path) -> None:
    root = make_image_folder(tmp_path / "images", classes=2, per_class=1)
    gray = np.full((40, 48), 32768, dtype=np.uint16)  # mid-gray in 16 bits
    for split in ("train", "val"):
        Image.fromarray(gray).save(root / split / "class_0" / "deep.png")
    datamodule = ImageFolderDataModule(root=str(root), resolution=32)
    datamodule.setup("fit")
    val = datamodule.val_set
    index = next(i for i, (path, _) in enumerate(val.samples) if path.endswith("deep.png"))  # type: ignore[union-attr]
    image, _ = val[index]  # type: ignore[index]
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    restored = image * std[:, None, None] + mean[:, None, None]
    assert torch.allclose(restored, torch.full_like(restored, 128 / 255), atol=0.01)


def _eval_split(datamodule: ImageFolderDataModule) -> tuple[list[tuple[str, int]], list[str]]:
    val = datamodule.val_set
    assert isinstance(val, ImageFolderSplit)
    return list(val.samples), list(val.skipped)


def test_a_checked_evaluation_folder_is_not_decoded_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The next job of a multirun and the DDP ranks Lightning launches (handed the first process's checks
    in the environment) get the same evaluation split reading only the files found unreadable."""
    monkeypatch.setattr(eval_checks, "_CHECKED_FOLDERS", {})
    monkeypatch.setenv(EVAL_CHECKS_ENV, "")  # restored after the test
    root = make_image_folder(tmp_path / "images", classes=2, per_class=4)
    broken = root / "val" / "class_1" / "img_2.jpg"
    corrupt(broken.parent, [broken.name])
    first = ImageFolderDataModule(root=str(root), resolution=32)
    first.setup("fit")
    samples, skipped = _eval_split(first)
    assert len(samples) == 7 and skipped == [str(broken)]
    hand_on_eval_checks()  # what the first process does before Lightning launches the other ranks

    decoded: list[str] = []
    read_error = image_folder._read_error
    monkeypatch.setattr(image_folder, "_read_error", lambda path: decoded.append(path) or read_error(path))
    monkeypatch.setattr(eval_checks, "_CHECKED_FOLDERS", {})  # a launched rank starts with none
    take_eval_checks()
    with caplog.at_level(logging.WARNING, logger="mobilenet_pl"):
        again = ImageFolderDataModule(root=str(root), resolution=32)
        again.setup("fit")
    assert decoded == [str(broken)]  # not the 7 readable ones
    assert _eval_split(again) == (samples, skipped)
    assert "img_2.jpg" in caplog.text  # still named in this job's log

    # the unreadable file replaced by a readable one: the folder changed, so it is checked again, and evaluated
    broken.write_bytes((root / "val" / "class_1" / "img_1.jpg").read_bytes())
    repaired = ImageFolderDataModule(root=str(root), resolution=32)
    repaired.setup("fit")
    assert len(decoded) == 1 + 8 and _eval_split(repaired)[1] == []
    assert len(_eval_split(repaired)[0]) == 8


def test_an_image_that_failed_to_read_once_is_read_again_by_the_next_job(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A passing read error (a network file system's hiccup) costs one job that image, not every later one."""
    monkeypatch.setattr(eval_checks, "_CHECKED_FOLDERS", {})
    root = make_image_folder(tmp_path / "images", classes=2, per_class=2)
    flaky = str(root / "val" / "class_0" / "img_1.jpg")
    read_error = image_folder._read_error
    monkeypatch.setattr(
        image_folder, "_read_error", lambda path: UnreadableImage("EIO") if path == flaky else read_error(path)
    )
    first = ImageFolderDataModule(root=str(root), resolution=32)
    first.setup("fit")
    assert _eval_split(first)[1] == [flaky]
    monkeypatch.setattr(image_folder, "_read_error", read_error)  # the file system is fine again
    second = ImageFolderDataModule(root=str(root), resolution=32)
    second.setup("fit")
    samples, skipped = _eval_split(second)
    assert skipped == [] and flaky in [path for path, _ in samples] and len(samples) == 4


@pytest.mark.parametrize("text", ["", "not json", "[]", '{"d": [1]}', '{"d": {"x.jpg": "e"}}', '{"d": ["x", null]}'])
def test_handed_on_checks_that_are_not_ours_are_ignored(
    text: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(eval_checks, "_CHECKED_FOLDERS", {})
    monkeypatch.setenv(EVAL_CHECKS_ENV, text)
    take_eval_checks()
    assert eval_checks._CHECKED_FOLDERS == {}
    root = make_image_folder(tmp_path / "images", classes=2, per_class=2)
    corrupt(root / "val" / "class_0", ["img_0.jpg"])
    datamodule = ImageFolderDataModule(root=str(root), resolution=32)
    datamodule.setup("fit")  # checked here instead
    assert len(_eval_split(datamodule)[0]) == 3


def test_checks_too_large_for_the_environment_are_not_handed_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(EVAL_CHECKS_ENV, "{}")  # a previous job's
    monkeypatch.setattr(eval_checks, "_CHECKED_FOLDERS", {"d": [f"{'x' * 400}{i}.jpg" for i in range(100)]})
    hand_on_eval_checks()
    assert EVAL_CHECKS_ENV not in os.environ  # the launched ranks check the folders themselves
