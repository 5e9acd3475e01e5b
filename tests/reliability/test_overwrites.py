"""Nothing is silently replaced: exports refuse an existing file (a checkpoint always), and two training
runs in one run dir refuse the second instead of overwriting each other's last.ckpt and results.json."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import FAST

from mobilenet_pl.export import main as export_main
from mobilenet_pl.quantize import main as quantize_main
from mobilenet_pl.train import main as train_main


def error_lines(capsys: pytest.CaptureFixture[str]) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]


@pytest.fixture
def ckpt(tmp_path: Path) -> Path:
    path = tmp_path / "model.ckpt"
    path.write_bytes(b"not loaded: the output is checked first")
    return path


@pytest.mark.parametrize("name", ["model.onnx", "other.ckpt"])
def test_export_refuses_an_existing_file(
    name: str, ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    existing = tmp_path / name
    existing.write_bytes(b"earlier work")
    assert export_main([f"ckpt_path={ckpt}", f"out={existing}", "check=false"]) == 2
    [line] = error_lines(capsys)
    assert "out=" in line and ("overwrite=true" in line or "checkpoint" in line)
    assert existing.read_bytes() == b"earlier work"


def test_export_never_replaces_a_checkpoint_even_with_overwrite(ckpt: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert export_main([f"ckpt_path={ckpt}", f"out={ckpt}", "overwrite=true", "check=false"]) == 2
    [line] = error_lines(capsys)
    assert "would replace a checkpoint" in line
    assert ckpt.read_bytes() == b"not loaded: the output is checked first"


@pytest.mark.parametrize("where", ["folder", "under_a_file"])
def test_export_to_a_folder_or_under_a_file_is_one_line(
    where: str, ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path if where == "folder" else ckpt / "x.onnx"
    assert export_main([f"ckpt_path={ckpt}", f"out={out}", "check=false"]) == 2
    [line] = error_lines(capsys)
    assert f"out={str(out)!r}" in line


def test_quantize_keeps_an_earlier_export(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "run"
    assert train_main([*FAST, "logger=none", "test=false", "width=0.25", f"hydra.run.dir={run}"]) == 0
    trained = run / "checkpoints" / "last.ckpt"
    earlier = trained.with_name("last.int8.onnx")
    earlier.write_bytes(b"earlier quantization")
    capsys.readouterr()
    assert quantize_main([f"ckpt_path={trained}", "calib_batches=1", "calls=1", "repeats=1"]) == 2
    [line] = error_lines(capsys)
    assert "overwrite=true" in line and earlier.read_bytes() == b"earlier quantization"
    assert not trained.with_name("last.onnx").exists()  # refused before anything was written


HOLD = """
import sys, time
from pathlib import Path
from mobilenet_pl.app.run_dir import run_dir_lock
with run_dir_lock(Path(sys.argv[1])):
    print("held", flush=True)
    time.sleep(120)
"""


def test_second_run_in_a_busy_run_dir_is_refused_then_resumes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    run_dir = tmp_path / "run"
    args = [*FAST, "logger=none", "test=false", "width=0.25", f"hydra.run.dir={run_dir}"]
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(run_dir)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        assert train_main(args) == 2
        [line] = error_lines(capsys)
        assert "hydra.run.dir=" in line and "in use by another run" in line and f"pid {holder.pid}" in line
        assert not (run_dir / "checkpoints").exists()
    finally:
        holder.kill()
        holder.wait()
    time.sleep(0.1)
    assert train_main(args) == 0  # the lock died with its process: the dir is free again
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
