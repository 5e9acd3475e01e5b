"""Hostile checkpoints given to training: another model, a foreign state dict, an empty file, and the same
checks for the ``last.ckpt`` an auto-resume picks up. Each is one ``error:`` line, exit 2, before training."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
import torchvision
from helpers import FAST

from mobilenet_pl.train import main as train_main

BASE = [*FAST, "logger=none", "test=false", "width=0.25"]


@pytest.fixture(scope="module")
def last_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("first_run")
    assert train_main([*BASE, f"hydra.run.dir={run_dir}"]) == 0
    return run_dir / "checkpoints" / "last.ckpt"


def refusal(args: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    status = train_main([*BASE, *args])
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
    assert status == 2 and len(lines) == 1
    return lines[0]


def test_checkpoint_of_another_width_is_refused_naming_both(
    last_ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    line = refusal([f"hydra.run.dir={tmp_path}", f"ckpt_path={last_ckpt}", "width=0.5"], capsys)
    assert "ckpt_path=" in line and "width 0.25" in line and "width 0.5" in line


def test_checkpoint_of_another_model_is_refused_naming_both(
    last_ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    line = refusal([f"hydra.run.dir={tmp_path}", f"ckpt_path={last_ckpt}", "model=v1"], capsys)
    assert "mobilenet_v2" in line and "mobilenet_v1" in line


def test_torchvision_state_dict_as_ckpt_path_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    foreign = tmp_path / "tv.pth"
    torch.save(torchvision.models.mobilenet_v2(num_classes=10).state_dict(), foreign)
    line = refusal([f"hydra.run.dir={tmp_path / 'run'}", f"ckpt_path={foreign}"], capsys)
    assert "not a mobilenet_pl training checkpoint" in line and "model.pretrained" in line


def test_empty_checkpoint_says_empty(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "empty.ckpt"
    empty.touch()
    line = refusal([f"hydra.run.dir={tmp_path / 'run'}", f"ckpt_path={empty}"], capsys)
    assert "empty" in line and "mmap" not in line


@pytest.mark.parametrize("kind", ["other_model", "pickled", "truncated"])
def test_auto_resume_checks_its_last_ckpt_like_ckpt_path(
    kind: str, last_ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "checkpoints" / "last.ckpt"
    target.parent.mkdir(parents=True)
    shutil.copy(last_ckpt, target)
    extra = ["width=0.5"] if kind == "other_model" else []
    if kind == "pickled":
        torch.save({"state_dict": {}, "hyper_parameters": {"model": Path("x")}}, target)  # a pickled object
    if kind == "truncated":
        target.write_bytes(last_ckpt.read_bytes()[:1000])
    line = refusal([f"hydra.run.dir={tmp_path}", *extra], capsys)
    assert line.startswith("error: auto_resume=")


@pytest.mark.parametrize("kind", ["garbage.safetensors", "list.pth", "int_keys.pth"])
def test_unreadable_pretrained_weights_are_one_line(
    kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    weights = tmp_path / kind
    if kind == "garbage.safetensors":
        weights.write_bytes(b"not a safetensors file" * 10)
    else:
        torch.save([torch.zeros(2)] if kind == "list.pth" else {1: torch.zeros(2)}, weights)
    monkeypatch.chdir(tmp_path)
    line = refusal([f"hydra.run.dir={tmp_path / 'run'}", f"model.pretrained={weights}"], capsys)
    assert line.startswith(f"error: model.pretrained='{weights}' is not allowed: not a readable weights file")


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"", "empty"),
        (b'{"val/acc1": 0.9}', "not a loadable tensor-only checkpoint"),
        (b"\x80\x04K\x01.", "tensor-only"),
    ],
    ids=["empty", "results-json", "raw-pickle"],
)
def test_library_load_from_checkpoint_names_a_file_that_is_no_checkpoint(
    content: bytes, reason: str, tmp_path: Path
) -> None:
    """``MobileNetClassifier.load_from_checkpoint`` of a file that is no checkpoint (a results.json passed by
    mistake, an empty file) says so, instead of torch's advice about mmap and zip serialization."""
    from mobilenet_pl.lit.classifier import MobileNetClassifier

    path = tmp_path / "results.json"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=f"checkpoint_path=.*results.json.*{reason}") as caught:
        MobileNetClassifier.load_from_checkpoint(path)
    assert "mmap" not in str(caught.value)
