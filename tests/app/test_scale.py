"""Scale-out: DDP on CPU processes (gloo), sweeps and their report, multirun x DDP, Optuna, submitit."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
import yaml
from helpers import run_ok
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
