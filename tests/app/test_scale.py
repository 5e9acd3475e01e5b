"""Scale-out: DDP on CPU processes (gloo), sweeps and their report, multirun x DDP, Optuna, submitit."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torchvision.datasets.cifar as tv_cifar
import yaml
from helpers import make_cifar10_folder, make_image_folder, run_ok
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch.utils.data import TensorDataset

from mobilenet_pl.eval import evaluate, load_checkpoint
from mobilenet_pl.lit.data import IGNORE_INDEX, EvalShard, FakeDataModule
from mobilenet_pl.lit.optim import scaled_lr
from mobilenet_pl.report import main as report_main

TINY = [
    "data=fake",
    "logger=none",
    "trainer.max_epochs=1",
    "+trainer.limit_train_batches=2",
    "+trainer.enable_progress_bar=false",
]
DDP_CPU = ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "trainer.precision=32-true"]


@pytest.mark.parametrize("size", [1, 7, 45, 64])
@pytest.mark.parametrize("world", [2, 3])
def test_eval_shards_cover_every_sample_exactly_once(size: int, world: int) -> None:
    dataset = TensorDataset(torch.arange(size).float(), torch.arange(size))
    shards = [EvalShard(dataset, rank, world) for rank in range(world)]
    assert len({len(s) for s in shards}) == 1  # equal lengths keep collective ops in step
    labels = [int(s[i][1]) for s in shards for i in range(len(s))]
    real = sorted(label for label in labels if label != IGNORE_INDEX)
    assert real == list(range(size))


def test_lr_scaling_rule() -> None:
    assert scaled_lr(0.1, 256) == pytest.approx(0.1)
    assert scaled_lr(0.1, 1024) == pytest.approx(0.4)


def test_ddp_two_processes_equals_single_process_evaluation(tmp_path: Path) -> None:
    # 45 test and 37 val images over 2 ranks with batch 8: uneven shards and partial batches
    run_ok(
        "mobilenet_pl.train",
        *TINY,
        *DDP_CPU,
        "width=0.25",
        "data.test_size=45",
        "data.val_size=37",
        "data.batch_size=8",
        cwd=tmp_path,
    )
    runs = list(tmp_path.glob("outputs/*/*/results.json"))
    assert len(runs) == 1, "one run dir and one results.json per DDP job"
    results = json.loads(runs[0].read_text())
    assert results["test_samples"] == 45 and results["metrics"]["val/samples"] == 37

    module = load_checkpoint(results["checkpoint"])
    datamodule = FakeDataModule(test_size=45, val_size=37, batch_size=8)
    datamodule.setup("test")
    single = evaluate(module, datamodule.test_dataloader())
    assert single["samples"] == 45
    assert results["metrics"]["test/acc1"] == pytest.approx(single["acc1"], abs=1e-7)
    assert results["metrics"]["test/acc5"] == pytest.approx(single["acc5"], abs=1e-7)
    assert results["metrics"]["test/loss"] == pytest.approx(single["loss"], rel=1e-4)


CIFAR_PATCH = """
import sys
import torchvision.datasets.cifar as cifar
# a generated CIFAR-10 folder: same files and layout as torchvision's, other checksums
cifar.CIFAR10._check_integrity = lambda self: True
cifar.check_integrity = lambda *args, **kwargs: True
from mobilenet_pl.train import main
main()
"""


def data_option(name: str, tmp_path: Path) -> list[str]:
    """Overrides that select data option ``name`` with small, uneven val/test sets (partial batches)."""
    if name == "digits":
        return ["data=digits", "data.batch_size=32"]  # 359 val, 359 test images
    if name == "fake":
        return ["data=fake", "data.val_size=37", "data.test_size=45", "data.batch_size=8"]
    if name == "imagefolder":
        root = make_image_folder(tmp_path / "images", classes=3, per_class=5, splits=("train", "val", "test"))
        (root / "test" / "class_2" / "img_4.jpg").write_bytes(b"not a jpeg")  # left out on every rank
        return ["data=imagefolder", f"data.root={root}", "data.num_workers=0", "data.batch_size=4"]
    root = make_cifar10_folder(tmp_path / "cifar")
    return ["data=cifar10", f"data.root={root}", "data.download=false", "data.num_workers=0", "data.batch_size=4"]


@pytest.mark.slow
@pytest.mark.parametrize("world", [2, 3])
@pytest.mark.parametrize("data", ["digits", "fake", "imagefolder", "cifar10"])
def test_ddp_evaluation_equals_single_process_on_every_data_set(
    data: str, world: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ddp = ["trainer=ddp", "trainer.accelerator=cpu", f"trainer.devices={world}", "trainer.precision=32-true"]
    args = [*TINY[1:], *ddp, "width=0.25", "resolution=32", *data_option(data, tmp_path)]
    if data == "cifar10":
        script = tmp_path / "train_on_generated_cifar.py"
        script.write_text(CIFAR_PATCH)
        proc = subprocess.run(
            [sys.executable, str(script), *args], cwd=tmp_path, capture_output=True, text=True, timeout=600
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        monkeypatch.setattr(tv_cifar.CIFAR10, "_check_integrity", lambda self: True)
        monkeypatch.setattr(tv_cifar, "check_integrity", lambda *a, **k: True)
    else:
        run_ok("mobilenet_pl.train", *args, cwd=tmp_path, timeout=600)
    (results_path,) = tmp_path.glob("outputs/*/*/results.json")
    results = json.loads(results_path.read_text())

    # the same data, built from the run's own config, evaluated in this one process
    cfg = OmegaConf.load(results_path.parent / ".hydra" / "config.yaml")
    datamodule = instantiate(cfg.data)
    datamodule.setup("fit")
    module = load_checkpoint(results["checkpoint"])
    for split in ("val", "test"):
        single = evaluate(module, getattr(datamodule, f"{split}_dataloader")())
        assert single["samples"] == len(getattr(datamodule, f"{split}_set"))
        samples = results["test_samples"] if split == "test" else results["metrics"]["val/samples"]
        assert samples == single["samples"], split
        if split == "test":  # val/acc1 in results is the best epoch's; with one epoch it is this one
            assert results["metrics"]["test/acc5"] == pytest.approx(single["acc5"], abs=1e-7)
            assert results["metrics"]["test/loss"] == pytest.approx(single["loss"], rel=1e-4)
        assert results["metrics"][f"{split}/acc1"] == pytest.approx(single["acc1"], abs=1e-7), split
    if data == "imagefolder":
        assert results["test_samples"] == 14  # 15 images, one unreadable


def test_sweep_writes_summary_and_tradeoff_plot(tmp_path: Path) -> None:
    run_ok(
        "mobilenet_pl.train",
        "-m",
        "model=v1,v2",
        "width=0.25,0.5",
        *TINY,
        "+trainer.limit_val_batches=1",
        "+trainer.limit_test_batches=1",
        cwd=tmp_path,
    )
    (sweep,) = list(tmp_path.glob("multirun/*/*"))
    rows = list(csv.DictReader((sweep / "summary.csv").open()))
    assert [(r["model"], float(r["width"])) for r in rows] == [
        ("mobilenet_v1", 0.25),
        ("mobilenet_v1", 0.5),
        ("mobilenet_v2", 0.25),
        ("mobilenet_v2", 0.5),
    ]
    assert all(int(r["madds"]) > 0 and r["test_acc1"] for r in rows)
    assert (sweep / "tradeoff.png").stat().st_size > 10_000
    (sweep / "summary.csv").unlink()
    (sweep / "tradeoff.png").unlink()
    assert report_main([f"sweep_dir={sweep}"]) == 0  # python -m mobilenet_pl.report regenerates both
    assert (sweep / "summary.csv").is_file() and (sweep / "tradeoff.png").is_file()


def test_report_cli_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert report_main([f"sweep_dir={tmp_path / 'missing'}"]) == 2
    assert report_main([f"sweep_dir={tmp_path}"]) == 2
    assert "no results.json" in capsys.readouterr().err


def test_multirun_times_ddp_runs_each_job_once(tmp_path: Path) -> None:
    run_ok(
        "mobilenet_pl.train",
        "-m",
        "width=0.25,0.5",
        *TINY,
        *DDP_CPU,
        "data.batch_size=8",
        "+trainer.limit_val_batches=1",
        "+trainer.limit_test_batches=1",
        cwd=tmp_path,
    )
    sweeps = list(tmp_path.glob("multirun/*/*"))
    assert len(sweeps) == 1, "no rank may launch a sweep of its own"
    results = sorted(sweeps[0].glob("*/results.json"))
    assert [json.loads(p.read_text())["width"] for p in results] == [0.25, 0.5]
    assert all(json.loads(p.read_text())["test_samples"] == 16 for p in results)  # 1 batch of 8 on each of 2 ranks
    assert not list(tmp_path.glob("outputs"))  # extra ranks wrote no run dirs of their own


def test_submitit_local_sweep(tmp_path: Path) -> None:
    run_ok(
        "mobilenet_pl.train",
        "-m",
        "hydra/launcher=submitit_local",
        "width=0.25,0.5",
        *TINY,
        "+trainer.limit_val_batches=1",
        "+trainer.limit_test_batches=1",
        cwd=tmp_path,
    )
    (sweep,) = list(tmp_path.glob("multirun/*/*"))
    assert len(list(sweep.glob("*/results.json"))) == 2
    assert len(list(csv.DictReader((sweep / "summary.csv").open()))) == 2


def test_optuna_two_trials(tmp_path: Path) -> None:
    run_ok(
        "mobilenet_pl.train",
        "hparams_search=optuna",
        "hydra.sweeper.n_trials=2",
        *TINY,
        "+trainer.limit_val_batches=1",
        "+trainer.limit_test_batches=1",
        cwd=tmp_path,
    )
    (sweep,) = list(tmp_path.glob("multirun/*/*"))
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert set(best["best_params"]) == {"optimizer.lr", "optimizer.weight_decay", "width"}
    trials = [json.loads(p.read_text()) for p in sweep.glob("*/results.json")]
    assert len(trials) == 2
    assert best["best_value"] == pytest.approx(max(t["metrics"]["val/acc1"] for t in trials))
