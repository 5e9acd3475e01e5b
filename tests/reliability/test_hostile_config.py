"""Hostile configs through the real command line: values that pass the schema's types but would fail
later (mid-training, or silently) are refused up front with one ``error:`` line naming the key, exit 2."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from helpers import FAST, make_image_folder, run_cli

from mobilenet_pl.train import main as train_main


def assert_one_line_refusal(proc, key: str) -> str:  # type: ignore[no-untyped-def]
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr[-2000:]
    assert key in lines[0]
    return lines[0]


@pytest.mark.parametrize(
    ("args", "key"),
    [
        (["trainer.max_epochs=1.5"], "trainer.max_epochs"),
        (["data.batch_size=1.5"], "data.batch_size"),
        (["recipe.label_smoothing=1.5"], "recipe.label_smoothing"),
        (["recipe.label_smoothing=1.0"], "recipe.label_smoothing"),
        (["recipe.mixup=0.2", "data.batch_size=7"], "recipe.mixup"),
        (["recipe.cutmix=1.0", "data.batch_size=9"], "data.batch_size"),
        (["trainer.check_val_every_n_epoch=0"], "trainer.check_val_every_n_epoch"),
        (["scheduler=step", "scheduler.step_size=0"], "scheduler.step_size"),
        (["width=1e9"], "width"),
        (["resolution=100000"], "resolution"),
        (["seed=-1"], "seed"),
        (["+modle=v1"], "modle"),
        (["callbacks.progress_rate.max_per_second=abc"], "callbacks.progress_rate.max_per_second"),
        (["callbacks.progress_rate.max_per_second=0"], "callbacks.progress_rate.max_per_second"),
        (["callbacks.nonfinite.check_every_n_steps=0"], "callbacks.nonfinite.check_every_n_steps"),
        (["callbacks.throughput.warmup_fraction=2"], "callbacks.throughput.warmup_fraction"),
        (["+callbacks.nonfinite.bogus=1"], "callbacks.nonfinite.bogus"),
    ],
)
def test_value_that_would_fail_later_is_refused_before_training(
    args: list[str], key: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)  # the train command's own entry point, in process (a subprocess per case is slow)
    status = train_main([*FAST, *args, "logger=none", "test=false"])
    err = capsys.readouterr().err
    assert_one_line_refusal(subprocess.CompletedProcess([], status, "", err), key)
    assert not list(tmp_path.rglob("*.ckpt"))  # refused before any training


@pytest.mark.parametrize(("args", "key"), [(["seed=-1"], "seed"), (["+modle=v1"], "modle")])
def test_real_command_refuses_in_one_line(args: list[str], key: str, tmp_path: Path) -> None:
    proc = run_cli("mobilenet_pl.train", *FAST, *args, "logger=none", "test=false", cwd=tmp_path)
    assert_one_line_refusal(proc, key)


@pytest.mark.parametrize("value", ["bogus", "rand-bogus", "rand-x5"])
def test_bad_randaugment_string_is_refused_up_front(
    value: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    root = make_image_folder(tmp_path / "images", classes=2, per_class=2)
    monkeypatch.chdir(tmp_path)
    status = train_main(
        ["data=imagefolder", f"data.root={root}", f"data.randaugment={value}", *FAST, "logger=none", "test=false"]
    )
    assert_one_line_refusal(subprocess.CompletedProcess([], status, "", capsys.readouterr().err), "data.randaugment")
    assert not list(tmp_path.rglob("*.ckpt"))


@pytest.mark.slow
def test_unknown_top_level_key_is_refused_in_a_sweep_too(tmp_path: Path) -> None:
    proc = run_cli("mobilenet_pl.train", "-m", "+modle=v1", *FAST, "logger=none", "test=false", cwd=tmp_path)
    assert proc.returncode != 0
    assert "error: unknown key 'modle'; did you mean 'model'?" in proc.stderr
    assert not list(tmp_path.rglob("*.ckpt"))


def test_run_dir_under_a_file_is_one_line(tmp_path: Path) -> None:
    afile = tmp_path / "afile"
    afile.write_text("x")
    proc = run_cli("mobilenet_pl.train", f"hydra.run.dir={afile}/run", *FAST, "logger=none", cwd=tmp_path)
    line = assert_one_line_refusal(proc, "hydra.run.dir=")
    assert "is a file, not a folder" in line


def test_callbacks_removed_from_the_app_pass_the_checks(tmp_path: Path) -> None:
    from helpers import compose_train

    from mobilenet_pl.app.config import CALLBACK_MINIMUMS, validate

    removed = sorted({f"~callbacks.{key.split('.')[1]}" for key in CALLBACK_MINIMUMS})
    validate(compose_train([*FAST, *removed], tmp_path))  # nothing left to check, nothing refused
