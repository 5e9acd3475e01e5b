"""``data.decode_on``: image folders decoded on the trainer's device through the real app, and the choice."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import lightning as L
import numpy as np
import pytest
import torch
from helpers import FAST, compose_train, make_image_folder, run_cli, run_ok
from PIL import Image

from mobilenet_pl.lit.callbacks import WandbTestReport
from mobilenet_pl.lit.classifier import MobileNetClassifier
from mobilenet_pl.lit.data import ImageFolderDataModule, device_decode
from mobilenet_pl.train import train

SMALL = ["resolution=32", "width=0.25", "logger=none", "data.batch_size=4", "data.num_workers=0"]


def _folder(tmp_path: Path) -> Path:
    """2 classes x 4 images, textured (a plain colour would crop alike however it is cropped), various sizes."""
    root = make_image_folder(tmp_path / "images", classes=2, per_class=4)
    rng = np.random.default_rng(0)
    for path in sorted(root.glob("*/*/*.jpg")):
        height, width = (int(v) for v in rng.integers(40, 90, 2))
        cells = rng.integers(0, 255, (height // 6 + 1, width // 6 + 1, 3), dtype=np.uint8)
        Image.fromarray(cells).resize((width, height), Image.BILINEAR).save(path, quality=90)
    (root / "val" / "class_1" / "img_2.jpg").write_bytes(b"\xff\xd8 not a jpeg")  # left out of evaluation
    return root


def test_fit_and_test_decode_on_the_device(run_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = {True: 0, False: 0}
    original = device_decode.DeviceAugment.__call__

    def counting(self: device_decode.DeviceAugment, batch: Any, *args: Any) -> Any:
        calls[self.train] += 1
        return original(self, batch, *args)

    monkeypatch.setattr(device_decode.DeviceAugment, "__call__", counting)
    overrides = ["data=imagefolder", f"data.root={_folder(tmp_path)}", "data.decode_on=device", *SMALL, *FAST]
    train(compose_train(overrides, run_dir), run_dir)
    saved = json.loads((run_dir / "results.json").read_text())
    assert saved["test_samples"] == 7  # 8 val images, one unreadable: exact evaluation
    assert saved["skipped_images"] == {"train": 0, "val": 1, "test": 1}
    assert calls[True] == 2 and calls[False] >= 4  # 2 training batches; validation (+ sanity check) and test


def _test_metrics(ckpt: str, root: Path, decode_on: str) -> dict[str, float]:
    module = MobileNetClassifier.load_from_checkpoint(ckpt, map_location="cpu", weights_only=True)
    datamodule = ImageFolderDataModule(root=str(root), resolution=32, batch_size=4, decode_on=decode_on)
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    metrics = trainer.test(module, datamodule=datamodule, verbose=False)[0]
    # the W&B report reads test_dataloader() itself, outside Lightning's batch hooks
    pixels, captions = WandbTestReport(num_samples=3)._samples(trainer, module, ["a", "b"])
    assert len(captions) == 3 and pixels[0].shape == (32, 32, 3), decode_on
    return {key: float(value) for key, value in metrics.items()}


def test_workers_and_device_evaluate_a_checkpoint_alike(run_dir: Path, tmp_path: Path) -> None:
    root = _folder(tmp_path)
    overrides = ["data=imagefolder", f"data.root={root}", "data.decode_on=workers", *SMALL, *FAST]
    ckpt = train(compose_train(overrides, run_dir), run_dir)["checkpoint"]
    workers, device = (_test_metrics(ckpt, root, decode_on) for decode_on in ("workers", "device"))
    assert workers.keys() == device.keys() and "test/loss" in workers
    # the device path's resize differs from PIL's by about 0.01 per pixel (tests/lit/test_device_decode.py)
    for key in workers:
        assert device[key] == pytest.approx(workers[key], rel=0.05, abs=0.02), key
    # the eval tool has no Trainer: decode_on=device reads like workers, and evaluates the same images
    args = [f"ckpt_path={ckpt}", "data=imagefolder", f"data.root={root}", "data.decode_on=device", "split=test"]
    run_ok("mobilenet_pl.eval", *args, "batch_size=4", cwd=tmp_path)
    evaluated = json.loads(next(tmp_path.glob("outputs/eval/*/*/results.json")).read_text())
    assert evaluated["test_samples"] == 7
    assert evaluated["metrics"]["test/acc1"] == pytest.approx(workers["test/acc1"], abs=1e-6)
    # a model after two steps barely looks at its input: compare the evaluation batches themselves too
    batches = {}
    for decode_on in ("workers", "device"):
        datamodule = ImageFolderDataModule(root=str(root), resolution=32, batch_size=8, decode_on=decode_on)
        datamodule.trainer = L.Trainer(accelerator="cpu", logger=False)
        datamodule.setup("test")
        batches[decode_on] = datamodule.on_after_batch_transfer(next(iter(datamodule.test_dataloader())), 0)
    (x_workers, y_workers), (x_device, y_device) = batches["workers"], batches["device"]
    assert torch.equal(y_workers, y_device) and x_device.shape == x_workers.shape == (7, 3, 32, 32)
    assert 0 < (x_device - x_workers).abs().mean() < 0.02  # measured 1e-4 (torchvision's uint8 resize vs PIL)


def test_the_choice_waits_for_the_trainer(tmp_path: Path) -> None:
    root = _folder(tmp_path)

    def first_batch(decode_on: str, device: str | None, randaugment: str | None = None) -> Any:
        datamodule = ImageFolderDataModule(
            root=str(root), resolution=32, batch_size=4, decode_on=decode_on, randaugment=randaugment
        )
        datamodule.setup("fit")  # as the app does, before a Trainer exists
        if device is not None:
            datamodule.trainer = SimpleNamespace(  # type: ignore[assignment]
                strategy=SimpleNamespace(root_device=torch.device(device)), global_rank=0, world_size=1
            )
        return next(iter(datamodule.val_dataloader()))

    assert isinstance(first_batch("device", "cpu"), device_decode.EncodedBatch)
    assert isinstance(first_batch("auto", "cuda"), device_decode.EncodedBatch)  # only the loader; no GPU needed
    for decode_on, device, randaugment in [
        ("auto", "cpu", None),
        ("device", None, None),  # no Trainer (eval, quantize): nothing would decode the bytes
        ("device", "cpu", "rand-m9-mstd0.5"),  # RandAugment works on PIL images
        ("workers", "cuda", None),
    ]:
        images, labels = first_batch(decode_on, device, randaugment)
        assert images.shape == (4, 3, 32, 32) and labels.dtype == torch.long, (decode_on, device)


def test_a_bad_value_is_one_line_naming_the_key(tmp_path: Path) -> None:
    root = make_image_folder(tmp_path / "images", classes=2, per_class=2)
    proc = run_cli("mobilenet_pl.train", "data=imagefolder", f"data.root={root}", "data.decode_on=gpu", cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "data.decode_on='gpu' is not allowed: must be 'auto', 'workers' or 'device'" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
