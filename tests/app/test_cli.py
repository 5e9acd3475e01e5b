"""The commands as users type them: real processes, bad input, an installed wheel, evaluation."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from helpers import FAST, run_cli, run_ok

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["width=-1"], "error: width=-1.0 is not allowed: width must be a number > 0"),
        (["resolution=16"], "error: resolution=16 is not allowed: resolution must be a whole number >= 32"),
        (["data=imagefolder"], "error: data.root is missing: set data.root=/path/to/images"),
        (["ckpt_path=/no/such.ckpt"], "error: ckpt_path='/no/such.ckpt' is not allowed: the file does not exist"),
        (["width=abc"], "Value 'abc' of type 'str' could not be converted to Float"),
        (["model=v3"], "unknown option 'model=v3'; choose from: model=v1, model=v2"),
        (["widht=0.5"], "unknown key 'widht'; did you mean 'width'?"),
        (["trainer.max_epoch=3"], "unknown key 'trainer.max_epoch'; did you mean 'trainer.max_epochs'?"),
        (["trainer=gpuu"], "unknown option 'trainer=gpuu'; did you mean 'trainer=gpu'?"),
        (["+modle=v1"], "unknown key 'modle'; did you mean 'model'?"),
    ],
)
def test_bad_input_exits_nonzero_without_traceback(args: list[str], expected: str, tmp_path: Path) -> None:
    proc = run_cli("mobilenet_pl.train", *args, "logger=none", cwd=tmp_path)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0]  # Hydra's errors too
    assert not any(word in lines[0] for word in ("Schema", "struct", "Could not"))  # the user's words, not ours


def test_wheel_ships_configs_and_runs_from_any_directory(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(dist), str(REPO)],
        check=True,
        capture_output=True,
    )
    wheel = next(dist.glob("mobilenet_pl-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "mobilenet_pl/conf/train.yaml" in names and "mobilenet_pl/conf/model/v2.yaml" in names
    site = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheel)],
        check=True,
        capture_output=True,
    )
    workdir = tmp_path / "elsewhere"
    workdir.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site), "WANDB_MODE": "offline"}
    probe = subprocess.run(
        [sys.executable, "-c", "import mobilenet_pl; print(mobilenet_pl.__file__)"],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert probe.stdout.startswith(str(site))  # the installed wheel, not the source tree
    proc = subprocess.run(
        [sys.executable, "-m", "mobilenet_pl.train", "trainer=debug", "logger=none"],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = list(workdir.glob("outputs/*/*/results.json"))
    assert len(results) == 1 and json.loads(results[0].read_text())["model"] == "mobilenet_v2"


def test_eval_cli_reports_exact_samples(tmp_path: Path) -> None:
    run_ok("mobilenet_pl.train", "data=fake", "width=0.25", "logger=none", "data.batch_size=16", *FAST, cwd=tmp_path)
    trained = json.loads(next(tmp_path.glob("outputs/*/*/results.json")).read_text())
    proc = run_ok(
        "mobilenet_pl.eval",
        f"ckpt_path={trained['checkpoint']}",
        "data=fake",
        "split=test",
        "data.test_size=50",
        "batch_size=16",
        cwd=tmp_path,
    )
    assert "on 50 images" in proc.stdout
    evaluated = json.loads(next(tmp_path.glob("outputs/eval/*/*/results.json")).read_text())
    assert evaluated["test_samples"] == 50 and len(evaluated["per_class_acc1"]) == 10
    assert 0 <= evaluated["metrics"]["test/acc1"] <= 1
    assert next(tmp_path.glob("outputs/eval/*/*/confusion_matrix.png")).stat().st_size > 1000
    missing = run_cli("mobilenet_pl.eval", "ckpt_path=/no/such.ckpt", cwd=tmp_path)
    assert missing.returncode == 2 and "the file does not exist" in missing.stderr and "Traceback" not in missing.stderr


# -- one way in: every tool -------------------------------------------------------------------------------

TOOLS = ("train", "eval", "profile", "export", "quantize", "benchmark", "report")


@pytest.mark.parametrize("tool", TOOLS)
def test_help_says_what_lists_every_key_and_two_examples(tool: str, capsys: pytest.CaptureFixture[str]) -> None:
    import importlib

    from omegaconf import OmegaConf

    from mobilenet_pl.app.config import SCHEMAS

    assert importlib.import_module(f"mobilenet_pl.{tool}").main(["--help"]) == 0
    text = capsys.readouterr().out
    assert text.startswith(f"mobilenet_pl.{tool}: ") and "is powered by Hydra" not in text
    keys_section = text.split("== Keys ==")[1].split("== Defaults")[0]
    listed = {line.split()[0] for line in keys_section.splitlines() if line.strip()}
    schema_keys = set(OmegaConf.structured(SCHEMAS[tool]).keys())
    group_keys = {"model", "data", "optimizer", "scheduler", "trainer", "logger", "callbacks"}  # train's groups
    assert schema_keys - group_keys <= {key.split(".")[0] for key in listed}, "a key has no meaning in --help"
    examples = text.split("Examples:")[1]
    assert examples.count(f"python -m mobilenet_pl.{tool} ") == 2


def test_console_script_for_every_entry_point() -> None:
    import tomllib

    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert {f"mobilenet-pl-{tool}": f"mobilenet_pl.{tool}:main" for tool in TOOLS}.items() <= scripts.items()


# an absent package: its spec is found (libraries probing with find_spec carry on), importing it fails
BLOCK = """
import importlib.abc, importlib.machinery, sys
class Absent(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in {blocked!r} or name.startswith({blocked_prefix!r}):
            return importlib.machinery.ModuleSpec(name, self)
        return None
    def create_module(self, spec):
        raise ModuleNotFoundError(f"No module named {{spec.name!r}}", name=spec.name)
    def exec_module(self, module):
        pass
sys.meta_path.insert(0, Absent())
from mobilenet_pl.{tool} import main
sys.exit(main({args!r}))
"""


@pytest.mark.parametrize(
    ("tool", "args", "blocked", "message"),
    [
        (
            "export",
            ["ckpt_path=x.ckpt"],
            ("onnx",),
            "error: format=onnx needs onnx: pip install 'mobilenet-pl[export]'",
        ),
        (
            "quantize",
            ["ckpt_path=x.ckpt"],
            ("onnxruntime",),
            "error: quantize needs onnxruntime: pip install 'mobilenet-pl[export]'",
        ),
        (
            "train",
            ["hparams_search=optuna"],
            ("hydra_plugins.hydra_optuna_sweeper",),
            "error: hparams_search=optuna needs hydra_plugins: pip install 'mobilenet-pl[sweeps]'",
        ),
        (
            "train",
            ["-m", "hydra/launcher=slurm"],
            ("hydra_plugins.hydra_submitit_launcher",),
            "error: hydra/launcher=slurm needs hydra_plugins: pip install 'mobilenet-pl[sweeps]'",
        ),
    ],
)
def test_missing_extra_names_its_install_command(
    tool: str, args: list[str], blocked: tuple[str, ...], message: str, tmp_path: Path
) -> None:
    code = BLOCK.format(blocked=set(blocked), blocked_prefix=blocked[0], tool=tool, args=args)
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [message], proc.stderr[-2000:]


@pytest.mark.parametrize(
    "args",
    [
        ["model=v1", "width=0.75", "--cfg", "job"],  # as docs/training.md shows it
        ["--cfg", "job", "model=v1", "width=0.75"],
        ["--cfg", "job"],
    ],
)
def test_hydra_flags_work_wherever_the_overrides_stand(args: list[str], tmp_path: Path) -> None:
    """The runner adds one override of its own; argparse refuses a second run of overrides after a flag."""
    proc = run_cli("mobilenet_pl.train", *args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert ("width: 0.75" in proc.stdout) == ("width=0.75" in args), proc.stdout
    assert "output_subdir" not in proc.stdout  # the printed job config is the user's, not the runner's
