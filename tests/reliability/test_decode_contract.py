"""Every decode path has the same corrupt-image contract: an unreadable file is named, counted in
``skipped_images`` and left out (evaluation) or replaced (training), never silently substituted in an
evaluation count; when no image can be decoded at all the run stops with a data error, not a NaN loss."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import FAST, make_image_folder
from PIL import Image

from mobilenet_pl.eval import main as eval_main
from mobilenet_pl.lit.data.device_decode import DeviceAugment, EncodedBatch, read_encoded
from mobilenet_pl.lit.data.images import CorruptImageError
from mobilenet_pl.train import main as train_main

BASE = [*FAST, "logger=none", "test=false", "width=0.25"]
FOLDER = ["data=imagefolder", "data.num_workers=0", "data.batch_size=4", "resolution=32"]


def broken_entropy_jpeg(path: Path, seed: int = 0) -> Path:
    """A JPEG whose header is valid (the device path takes its bytes) but whose entropy data is garbage."""
    rng = np.random.default_rng(seed)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(buffer, "JPEG")
    data = bytearray(buffer.getvalue())
    sos = data.find(b"\xff\xda")
    start = sos + 2 + int.from_bytes(data[sos + 2 : sos + 4], "big")
    for i in range(start, len(data) - 2):
        data[i] = 0xFF if i % 7 == 0 else data[i] ^ 0x5A
    path.write_bytes(bytes(data))
    return path


def test_device_decoding_names_and_counts_a_broken_jpeg(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = make_image_folder(tmp_path / "images", classes=1, per_class=3, splits=("train",))
    bad = broken_entropy_jpeg(root / "train" / "class_0" / "zz_bad.jpg")
    paths = sorted(str(p) for p in (root / "train" / "class_0").iterdir())
    encoded = [read_encoded(path) for path in paths]
    assert all(image.data.dim() == 1 for image in encoded)  # all taken as JPEG bytes by the device path
    batch = EncodedBatch([image.data for image in encoded], torch.zeros(len(paths), dtype=torch.long), paths)
    augment = DeviceAugment(32, train=True)
    with caplog.at_level(logging.WARNING):
        images, labels = augment(batch, "train")
    assert images.shape[0] == 4 and labels.tolist() == [0, 0, 0, -100]
    assert augment.failed == {"train": 1} and augment.decoded == 3
    assert any(str(bad) in record.getMessage() for record in caplog.records)


def test_device_decoding_stops_when_no_image_decodes(tmp_path: Path) -> None:
    paths = [str(broken_entropy_jpeg(tmp_path / f"bad{i}.jpg", seed=i)) for i in range(3)]
    batch = EncodedBatch([read_encoded(p).data for p in paths], torch.zeros(3, dtype=torch.long), paths)
    with pytest.raises(CorruptImageError, match=r"no image could be decoded: all 3 read so far are corrupt"):
        DeviceAugment(32, train=True)(batch, "train")


def test_every_training_jpeg_undecodable_on_the_device_is_a_data_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = make_image_folder(tmp_path / "images", classes=2, per_class=4)
    for i, path in enumerate(sorted((root / "train").rglob("*.jpg"))):
        broken_entropy_jpeg(path, seed=i)
    status = train_main(
        [*BASE, *FOLDER, "data.decode_on=device", f"data.root={root}", f"hydra.run.dir={tmp_path / 'r'}"]
    )
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
    assert status == 2 and len(lines) == 1 and "no image could be decoded" in lines[0], lines
    assert "NaN" not in lines[0]


def test_a_broken_training_jpeg_on_the_device_is_counted_in_skipped_images(tmp_path: Path) -> None:
    root = make_image_folder(tmp_path / "images", classes=2, per_class=4)
    broken_entropy_jpeg(root / "train" / "class_0" / "img_0.jpg")
    run = tmp_path / "r"
    assert train_main([*BASE, *FOLDER, "data.decode_on=device", f"data.root={root}", f"hydra.run.dir={run}"]) == 0
    skipped = json.loads((run / "results.json").read_text())["skipped_images"]
    assert skipped["train"] == 1, skipped  # one epoch: the file was read once


def test_eval_of_the_training_split_leaves_a_corrupt_file_out_and_names_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = make_image_folder(tmp_path / "images", classes=2, per_class=4)
    run = tmp_path / "r"
    assert train_main([*BASE, *FOLDER, f"data.root={root}", f"hydra.run.dir={run}"]) == 0
    capsys.readouterr()
    corrupt = root / "train" / "class_1" / "img_0.jpg"
    corrupt.write_bytes(b"not a jpeg at all")
    args = [
        f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}",
        "data=imagefolder",
        f"data.root={root}",
        "data.num_workers=0",
        "split=train",
    ]
    assert eval_main([*args, f"hydra.run.dir={tmp_path / 'eval'}"]) == 0
    captured = capsys.readouterr()
    assert "on 7 images" in captured.out, captured.out  # 8 files, 7 readable: the corrupt one is not replaced
    assert f"skipping corrupt image {corrupt}" in captured.out + captured.err  # named
    results = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert results["test_samples"] == 7 and results["skipped_images"] == {"train": 1}
    # the labels are the readable files' own: class_1 has 3 images left, class_0 all 4
    assert results["per_class_acc1"].keys() == {"class_0", "class_1"}
