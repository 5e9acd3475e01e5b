"""Inputs that printed a traceback are one ``error:`` line naming the key or file, exit 2, before any work:
an export to a folder that cannot be written, an accelerator or device list this machine has not, an eval
device that is not here, a path holding ``,`` or ``=`` (with how to quote it), a typo in an added recipe key.
(A malformed results.json given to ``report``: tests/reliability/test_sweep_summary.py.)"""

from __future__ import annotations

import errno
import importlib.util
import os
from pathlib import Path

import pytest
import torch
from helpers import FAST

from mobilenet_pl.app.errors import error_boundary
from mobilenet_pl.eval import main as eval_main
from mobilenet_pl.export import main as export_main
from mobilenet_pl.quantize import main as quantize_main
from mobilenet_pl.train import main as train_main

BASE = [*FAST, "logger=none", "test=false", "width=0.25"]
UNWRITABLE = Path("/sys")  # sysfs refuses new files even to root


def _refuses_writes(folder: Path) -> bool:
    try:
        (folder / f".probe-{os.getpid()}").touch(exist_ok=False)
    except OSError:
        return True
    (folder / f".probe-{os.getpid()}").unlink()
    return False


def one_line(status: int, capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert status == 2 and len(lines) == 1 and lines[0].startswith("error: "), err[-2000:]
    return lines[0]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("trained")
    assert train_main([*BASE, f"hydra.run.dir={run_dir}"]) == 0
    return run_dir / "checkpoints" / "last.ckpt"


@pytest.mark.skipif(not _refuses_writes(UNWRITABLE), reason="needs a folder that refuses writes")
@pytest.mark.parametrize(
    ("main", "args"),
    [
        (export_main, ["out=/sys/model.onnx"]),
        (export_main, ["format=torchscript", "out=/sys/model.ts"]),
        (quantize_main, ["out=/sys/model.int8.onnx"]),
    ],
    ids=["export-onnx", "export-torchscript", "quantize"],
)
def test_output_to_a_folder_that_cannot_be_written_is_one_line(
    main: object, args: list[str], ckpt: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    line = one_line(main([f"ckpt_path={ckpt}", *args]), capsys)  # type: ignore[operator]
    assert "out='/sys/" in line and "is not writable" in line


def test_a_read_only_file_system_met_while_writing_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited, error_boundary():
        raise OSError(errno.EROFS, "Read-only file system", "/mnt/ro/model.onnx")
    assert exited.value.code == 2
    assert capsys.readouterr().err.strip() == "error: [Errno 30] Read-only file system: '/mnt/ro/model.onnx'"


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["trainer.accelerator=tpu"], "trainer.accelerator='tpu' is not allowed: no tpu device here"),
        (["trainer.accelerator=abacus"], "trainer.accelerator='abacus' is not allowed: it must be one of"),
        (["trainer.devices=[0,0]"], "trainer.devices=[0, 0] is not allowed: a list of devices must hold distinct"),
        (["trainer.devices=[-1]"], "trainer.devices=[-1] is not allowed"),
        (["trainer.accelerator=cpu", "trainer.devices=[0,1]"], "CPU devices are a number of processes"),
        (["+recipe.label_smothing=0.2"], "recipe.label_smothing is not allowed: recipe has no key 'label_smothing'"),
        (["+model.bogus=1"], "model.bogus"),
    ],
    ids=["tpu", "unknown-accelerator", "duplicate-devices", "negative-device", "cpu-device-ids", "recipe", "model"],
)
def test_training_values_this_machine_cannot_run_are_one_line(
    args: list[str], expected: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if "no tpu" in expected and importlib.util.find_spec("torch_xla") is not None:
        pytest.skip("torch_xla is installed")
    line = one_line(train_main([*BASE, f"hydra.run.dir={tmp_path / 'run'}", *args]), capsys)
    assert expected in line, line


@pytest.mark.parametrize("device", ["cuda", "cuda:0", "tpu", "cuda:x"])
def test_eval_on_a_device_that_is_not_here_is_one_line(
    device: str, ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if device.startswith("cuda") and device != "cuda:x" and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    line = one_line(eval_main([f"ckpt_path={ckpt}", f"device={device}", f"hydra.run.dir={tmp_path}"]), capsys)
    assert f"device={device!r} is not allowed" in line


@pytest.mark.parametrize("name", ["a,b", "a=b"])
def test_a_data_root_holding_a_comma_or_equals_sign_says_how_to_quote_it(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / name
    root.mkdir()  # empty: the quoted path gets as far as the folder check, which names it whole
    run = [*BASE, "data=imagefolder", f"hydra.run.dir={tmp_path / 'run'}"]
    line = one_line(train_main([*run, f"data.root={root}"]), capsys)
    assert f"'data.root=\"{root}\"'" in line, line
    line = one_line(train_main([*run, f'data.root="{root}"']), capsys)
    assert f"data.root={str(root)!r} is not allowed: it must be an existing, non-empty folder" in line
