"""Docs are tests: every shell command in README.md and docs/*.md code blocks runs, so a documented command
cannot break silently.

Commands run as written, in a fresh working directory, with three kinds of edits: placeholders
(``ckpt_path=...``, ``outputs/DATE/TIME/...``, ``/data/...``, ``SWEEP_DIR``) become real files made here;
long runs get fast overrides (a couple of batches, one job per sweep, tiny benchmark settings); and
commands that install, recurse into this suite or need the network or a GPU are not run (``NOT_RUN``,
each with its reason; GPU commands run where CUDA is available). Every page's Python blocks run too, as one
script per page, with the stand-ins listed in ``PYTHON_STANDINS`` and offline weight caches for
``pretrained=True`` (``populate_weight_caches``).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import FAST, make_image_folder, run_ok

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
SHELL_BLOCK = re.compile(r"```(?:bash|sh|shell)\n(.*?)```", re.S)

NOT_RUN = {
    "pip install": "installs packages (the test suite runs in an installed environment)",
    "nox -s": "runs this very test suite",
    "wandb login": "interactive, needs the network",
}
NEEDS_GPU = ("trainer=gpu", "trainer.accelerator=gpu", "device=cuda", "benchmarks/gpu_measure.sh")
TINY_BENCHMARK = ["steps=1", "resolution=64", "batch_size=2", "infer_batch=2", "repeats=1", "warmup=1", "threads=1"]


def shell_commands() -> list[tuple[str, str]]:
    """(doc file, command) for every command line of every shell block; ``a && b`` gives two commands."""
    found = []
    for doc in DOCS:
        for block in SHELL_BLOCK.findall(doc.read_text()):
            for line in block.replace("\\\n", " ").splitlines():
                command = re.split(r"\s#", line.strip(), maxsplit=1)[0].strip()
                if command and not command.startswith("#"):
                    found.extend((doc.name, part.strip()) for part in command.split("&&"))
    return found


def _unique(commands: list[tuple[str, str]]) -> list[tuple[str, str]]:
    seen: set[str] = set()
    return [(doc, cmd) for doc, cmd in commands if not (cmd in seen or seen.add(cmd))]


COMMANDS = _unique(shell_commands())  # README and docs/index.md repeat the quick start


def test_docs_have_commands() -> None:
    tools = {cmd.split()[2] for _, cmd in COMMANDS if cmd.startswith("python -m mobilenet_pl.")}
    assert tools >= {f"mobilenet_pl.{t}" for t in ("train", "eval", "profile", "export", "quantize", "benchmark")}


def _first_sweep_values(args: list[str]) -> list[str]:
    """``key=a,b,c`` -> ``key=a``: one job per documented sweep (each value is tested by the config tests)."""
    return [re.sub(r"^([\w.+/~]+)=([^\[\],]+),.*$", r"\1=\2", arg) for arg in args]


def _with(args: list[str], overrides: list[str]) -> list[str]:
    """``args`` with each ``key=value`` of ``overrides`` replacing the same key's value, or appended."""
    out = list(args)
    for override in overrides:
        key = override.split("=", 1)[0].lstrip("+")
        same = [i for i, arg in enumerate(out) if arg.split("=", 1)[0].lstrip("+") == key]
        if same:
            out[same[0]] = override
        else:
            out.append(override)
    return out


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The files the placeholders stand for: checkpoints (digits and image folder), images, a sweep dir."""
    root = tmp_path_factory.mktemp("docs")
    images = make_image_folder(root / "images", splits=("train", "val"))
    # digits with the default config: the documented resume (``ckpt_path=.../last.ckpt``) continues that run
    folder_args = ["data=imagefolder", f"data.root={images}", "resolution=64", "width=0.25"]
    for name, extra in (("digits", []), ("folder", folder_args)):
        work = root / name
        work.mkdir()
        run_ok("mobilenet_pl.train", "logger=none", *extra, *FAST, cwd=work)
    digits = next((root / "digits").glob("outputs/*/*/results.json"))
    folder = next((root / "folder").glob("outputs/*/*/results.json"))
    sweep = root / "sweep"
    (sweep / "0").mkdir(parents=True)
    (sweep / "0" / "results.json").write_text(digits.read_text())
    return {
        "digits": Path(json.loads(digits.read_text())["checkpoint"]),
        "digits_last": Path(json.loads(digits.read_text())["last_checkpoint"]),
        "folder": Path(json.loads(folder.read_text())["checkpoint"]),
        "digits_run": digits.parent,
        "images": images,
        "sweep": sweep,
    }


def _fill_placeholders(args: list[str], made: dict[str, Path], workdir: Path) -> list[str]:
    """Placeholders become the files made here; a checkpoint is copied into ``workdir`` first, so what a
    command writes next to it (an export, a quantized model) is its own, as after a reader's own run."""
    folder_data = "data=imagefolder" in args
    out = []
    for arg in args:
        key, _, value = arg.partition("=")
        if key == "ckpt_path" and ("..." in value or "DATE" in value):
            ckpt = made["folder"] if folder_data else made["digits_last" if "last.ckpt" in value else "digits"]
            copy = workdir / "checkpoints" / ckpt.name
            copy.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(ckpt, copy)
            arg = f"ckpt_path={copy}"
        elif key == "data.root" and value.startswith("/data/"):
            arg = f"data.root={made['images']}"
        elif key == "sweep_dir" and value == "SWEEP_DIR":
            arg = f"sweep_dir={made['sweep']}"
        out.append(arg)
    return out


def _fast(tool: str, args: list[str]) -> list[str]:
    if any(arg.startswith("-") and arg not in ("-m", "--multirun") for arg in args):
        return args  # --help, --cfg job ...: nothing runs
    if tool == "train":
        # ``++``: set whether or not the chosen trainer option already has the key
        args = _with(_first_sweep_values(args), [f"++{o.lstrip('+')}" for o in FAST])
        if "hparams_search=optuna" in args:
            args = _with(args, ["hydra.sweeper.n_trials=1", "hydra.sweeper.sampler.n_startup_trials=1"])
        return args
    if tool == "benchmark":
        return _with(args, TINY_BENCHMARK)
    if tool == "quantize":
        return _with(args, ["calib_batches=1", "batch_size=8", "calls=2", "repeats=1", "qat_epochs=1"])
    return args


@pytest.mark.slow
@pytest.mark.parametrize(("doc", "command"), COMMANDS, ids=[f"{d}:{c[:70]}" for d, c in COMMANDS])
def test_documented_command_runs(doc: str, command: str, made: dict[str, Path], tmp_path: Path) -> None:
    skip = next((reason for prefix, reason in NOT_RUN.items() if command.startswith(prefix)), None)
    if skip:
        pytest.skip(f"not run: {skip}")
    if any(marker in command for marker in NEEDS_GPU) and not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    words = shlex.split(command)
    env = {**os.environ, "WANDB_MODE": "offline"}
    if words[0] == "bash":  # a prepared script of the repository (its results folder goes to tmp_path)
        script = subprocess.run(
            ["bash", words[1], str(tmp_path / words[2]), *words[3:]],
            cwd=REPO,
            env={**env, "PYTHON": sys.executable},  # this interpreter, not whichever python3 PATH finds
            timeout=660,  # each part is under 5 minutes of time limits
        )
        assert script.returncode == 0, f"{doc}: {command}"
        return
    assert words[:2] == ["python", "-m"] and words[2].startswith("mobilenet_pl."), f"{doc}: unexpected {command!r}"
    tool = words[2].removeprefix("mobilenet_pl.")
    args = _fast(tool, _fill_placeholders(words[3:], made, tmp_path))
    proc = subprocess.run(
        [sys.executable, "-m", words[2], *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900
    )
    assert proc.returncode == 0, f"{doc}: {command}\nran: {args}\n{proc.stderr[-3000:]}"


# -- Python examples ----------------------------------------------------------------------------------------

PYTHON_BLOCK = re.compile(r"```python\n(.*?)```", re.S)
PYTHON_PAGES = [doc for doc in DOCS if PYTHON_BLOCK.search(doc.read_text())]
# What a reader has and this machine lacks, per page: (text as written, stand-in) replacements, applied to the
# page's script; ``{images}``, ``{digits_last}``, ``{folder}`` and ``{device}`` are filled in. Everything else runs as written.
FEW_BATCHES = "limit_train_batches=2, limit_val_batches=2, limit_test_batches=2"
PYTHON_STANDINS: dict[str, list[tuple[str, str]]] = {
    "training.md": [
        ("/data/flowers", "{images}"),  # a user's image folder
        ("max_epochs=10)", f"max_epochs=1, {FEW_BATCHES})"),  # long runs get a couple of batches
        ("max_epochs=20, ", f"max_epochs=1, {FEW_BATCHES}, "),
    ],
    # an image-folder run's checkpoint: five feature taps, as for an ImageNet-sized input
    "weights.md": [("outputs/DATE/TIME/checkpoints/last.ckpt", "{folder}"), ("trusted.ckpt", "{digits_last}")],
    "device_decode.md": [("data/imagenet/train", "{images}/train"), ('batch.to("cuda")', 'batch.to("{device}")')],
}
PYTHON_ARGV = {"device_decode.md": ["{images}/train", "{device}", "8"]}  # its benchmark script's arguments


def populate_weight_caches(root: Path) -> dict[str, str]:
    """Offline caches holding every ``pretrained=True``/tag download, as after a reader's first (online) use.

    The files are the source libraries' own randomly initialised models saved where torchvision (TORCH_HOME)
    and timm (the Hugging Face cache) look, so our download-and-convert path runs for real, without a network.
    """
    import safetensors.torch
    import timm
    import torchvision

    from mobilenet_pl.models.convert import PRETRAINED

    revision = "0" * 40
    for weights in (w for tags in PRETRAINED.values() for w in tags.values()):
        if weights.source == "torchvision":
            url = torchvision.models.get_weight(weights.name).url
            builder = getattr(torchvision.models, weights.name.split("_Weights")[0].lower())
            target = root / "torch" / "hub" / "checkpoints" / url.rsplit("/", 1)[1]
            target.parent.mkdir(parents=True, exist_ok=True)
            torch.save(builder().state_dict(), target)
        else:
            repo = root / "hf" / "hub" / f"models--timm--{weights.name}"
            (repo / "snapshots" / revision).mkdir(parents=True, exist_ok=True)
            (repo / "refs").mkdir(exist_ok=True)
            (repo / "refs" / "main").write_text(revision)
            state = timm.create_model(weights.name.split(".")[0]).state_dict()
            safetensors.torch.save_file(state, repo / "snapshots" / revision / "model.safetensors")
    return {"TORCH_HOME": str(root / "torch"), "HF_HOME": str(root / "hf"), "HF_HUB_OFFLINE": "1"}


@pytest.fixture(scope="module")
def weight_caches(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return populate_weight_caches(tmp_path_factory.mktemp("caches"))


@pytest.mark.slow
@pytest.mark.parametrize("doc", PYTHON_PAGES, ids=[doc.name for doc in PYTHON_PAGES])
def test_documented_python_runs(
    doc: Path, made: dict[str, Path], weight_caches: dict[str, str], tmp_path: Path
) -> None:
    """A page's Python blocks run in order as one script (later blocks use earlier names, as a reader would),
    in a directory holding a finished run (``outputs/``, ``checkpoints/last.ckpt``), with the stand-ins above."""
    fill = {key: str(made[key]) for key in ("images", "digits_last", "folder")}
    fill["device"] = "cuda" if torch.cuda.is_available() else "cpu"
    script = "\n".join(PYTHON_BLOCK.findall(doc.read_text()))
    for written, standin in PYTHON_STANDINS.get(doc.name, []):
        assert written in script, f"{doc.name} no longer says {written!r}: update PYTHON_STANDINS"
        script = script.replace(written, standin.format(**fill))
    shutil.copytree(made["digits_run"], tmp_path / "outputs" / "2026-01-01" / "00-00-00")
    (tmp_path / "checkpoints").mkdir()
    shutil.copyfile(made["digits_last"], tmp_path / "checkpoints" / "last.ckpt")
    argv = [arg.format(**fill) for arg in PYTHON_ARGV.get(doc.name, [])]
    env = {**os.environ, "WANDB_MODE": "offline", **weight_caches}
    proc = subprocess.run(
        [sys.executable, "-c", script, *argv], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900
    )
    assert proc.returncode == 0, f"{doc.name}:\n{proc.stderr[-3000:]}"
