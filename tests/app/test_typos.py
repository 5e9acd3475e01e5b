"""A mistake on the command line is answered at once, in the user's words: the nearest key or option, one
``error:`` line, exit 2, before torch or Lightning load (the command modules import them in their task)."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from mobilenet_pl.app.config import TOOLS, unknown_name

# per command: a misspelt key, and the line it must answer with
TYPOS = {
    "train": ("widht=0.5", "unknown key 'widht'; did you mean 'width'?"),
    "eval": ("ckpt_pth=x.ckpt", "unknown key 'ckpt_pth'; did you mean 'ckpt_path'?"),
    "export": ("ckpt_path=x.ckpt", "fromat=onnx", "unknown key 'fromat'; did you mean 'format'?"),
    "quantize": ("calib_batchs=2", "unknown key 'calib_batchs'; did you mean 'calib_batches'?"),
    "profile": ("widht=1", "unknown key 'widht'; did you mean 'width'?"),
    "benchmark": ("sectoins=[train]", "unknown key 'sectoins'; did you mean 'sections'?"),
    "report": ("sweep_dri=x", "unknown key 'sweep_dri'; did you mean 'sweep_dir'?"),
}
HEAVY = ("torch", "lightning", "timm", "torchvision", "wandb", "matplotlib", "numpy", "onnx", "onnxruntime")
INTERNAL = ("Schema", "not in struct", "Could not override", "Could not find")


def _main(tool: str):  # type: ignore[no-untyped-def]
    return importlib.import_module(f"mobilenet_pl.{tool}").main


def _error_line(capsys: pytest.CaptureFixture[str]) -> str:
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    assert not any(word in lines[0] for word in INTERNAL), lines[0]
    return lines[0]


def test_every_command_has_a_typo_case() -> None:
    assert sorted(TYPOS) == sorted(TOOLS)


@pytest.mark.parametrize("tool", sorted(TYPOS))
def test_typo_names_the_nearest_key(tool: str, capsys: pytest.CaptureFixture[str]) -> None:
    *args, expected = TYPOS[tool]
    assert _main(tool)(list(args)) == 2
    assert expected in _error_line(capsys)


@pytest.mark.parametrize(
    ("tool", "args", "expected"),
    [
        ("train", ["trainer.max_epoch=3"], "unknown key 'trainer.max_epoch'; did you mean 'trainer.max_epochs'?"),
        ("train", ["recipe.mixp=0.2"], "unknown key 'recipe.mixp'; did you mean 'recipe.mixup'"),
        ("train", ["data.batch_sise=8"], "unknown key 'data.batch_sise'; did you mean 'data.batch_size'?"),
        ("train", ["model=v3"], "unknown option 'model=v3'; choose from: model=v1, model=v2"),
        ("train", ["optimizer=adamv"], "unknown option 'optimizer=adamv'; did you mean 'optimizer=adamw'?"),
        ("train", ["widht=0.5", "trainer.max_epoch=3"], "did you mean"),  # two mistakes: one line, the first
        ("eval", ["ckpt_path=x.ckpt", "data=digts"], "unknown option 'data=digts'; did you mean 'data=digits'?"),
        ("profile", ["model=v3"], "unknown option 'model=v3'; choose from: model=v1, model=v2"),
        ("train", ["+modle=v1"], "unknown key 'modle'; did you mean 'model'?"),
    ],
)
def test_nested_keys_and_group_options(
    tool: str, args: list[str], expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _main(tool)(args) == 2
    assert expected in _error_line(capsys)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["-m", "widht=0.25,0.5"], "unknown key 'widht'; did you mean 'width'?"),
        (["--multirun", "model=v3,v1"], "unknown option 'model=v3'; choose from: model=v1, model=v2"),
        (["-m", "width=0.25,0.5", "trainer.max_epoch=1"], "did you mean 'trainer.max_epochs'?"),
    ],
)
def test_a_sweep_with_a_typo_stops_before_its_first_job(
    args: list[str], expected: str, capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert _main("train")(args) == 2
    assert expected in _error_line(capsys)
    assert not (tmp_path / "multirun").exists()


def test_a_trainer_argument_the_config_does_not_set_says_how_to_add_it(capsys: pytest.CaptureFixture[str]) -> None:
    assert _main("train")(["trainer.max_steps=5"]) == 2
    assert "+trainer.max_steps=5" in _error_line(capsys)


@pytest.mark.parametrize("tool", ["eval", "export", "quantize", "report"])
def test_a_missing_required_key_comes_first(tool: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert _main(tool)([]) == 2  # export: before the missing ``export`` extra, whatever is installed
    key = "sweep_dir" if tool == "report" else "ckpt_path"
    assert _error_line(capsys).startswith(f"error: {key} is missing: set {key}=")


def test_unknown_name_lists_the_choices_when_none_is_close() -> None:
    assert unknown_name("key", "zzz", ["b", "a"]) == "unknown key 'zzz'; choose from: a, b"


def test_command_modules_import_no_heavy_package() -> None:
    """Importing a command costs Hydra only: its config is checked before torch and Lightning load."""
    probe = (
        "import json, sys\n"
        + "".join(f"import mobilenet_pl.{tool}\n" for tool in TOOLS)
        + f"print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_a_typo_loads_no_heavy_package() -> None:
    probe = (
        "import json, sys\nfrom mobilenet_pl.train import main\nstatus = main(['widht=0.5'])\n"
        f"print(json.dumps([status, sorted(m for m in {HEAVY!r} if m in sys.modules)]))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == [2, []]
