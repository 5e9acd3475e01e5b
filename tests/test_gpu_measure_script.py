"""benchmarks/gpu_measure.sh, the prepared GPU run, cannot rot unnoticed on machines without a GPU: its
shell parses, every stage's overrides are valid benchmark settings, and its stages fit the 5-minute budget."""

from __future__ import annotations

import shlex
import shutil
import subprocess
from pathlib import Path

from helpers import compose_train

from mobilenet_pl.bench.settings import settings

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_measure.sh"
BUDGET_S = 300  # one GPU run: under 5 minutes, device start-up not counted


def _stages() -> list[tuple[str, int, list[str]]]:
    """(name, time limit, overrides) of each ``stage NAME LIMIT ARGS...`` call, with the arguments ``stage``
    itself passes to every run."""
    lines = SCRIPT.read_text().splitlines()
    common = next(line for line in lines if line.startswith("common=("))
    common_args = common.removeprefix("common=(").split(")")[0].split()
    calls = [shlex.split(line) for line in lines if line.strip().startswith("stage ")]
    return [(name, int(limit), common_args + args) for _, name, limit, *args in calls]


def test_the_script_parses() -> None:
    bash = shutil.which("bash")
    assert bash is not None
    subprocess.run([bash, "-n", str(SCRIPT)], check=True)


def test_every_stage_is_a_valid_benchmark_run_within_the_budget(tmp_path: Path) -> None:
    stages = _stages()
    assert [name for name, _, _ in stages] == ["network_b256", "lightning_b256", "app_b128", "modes_b32", "modes_b256"]
    sections = set()
    for _, _, overrides in stages:
        assert "device=cuda" in overrides and "precision=bf16" in overrides
        # no CUDA here: the same settings on the CPU (settings() refuses device=cuda without a GPU)
        cfg = compose_train([o if o != "device=cuda" else "device=cpu" for o in overrides], tmp_path, "benchmark")
        sections |= set(settings(cfg).sections)
    assert sections == {"train", "lightning", "app", "modes"}  # what the GPU measurement covers
    for part in (stages[:3], stages[3:]):  # the two runs, "feed" and "modes"
        assert sum(limit + 10 for _, limit, _ in part) <= BUDGET_S  # each limit plus timeout's kill grace


def test_stage_batch_sizes_are_the_issues() -> None:
    overrides = {name: dict(o.split("=", 1) for o in args) for name, _, args in _stages()}
    assert overrides["lightning_b256"]["batch_size"] == "256"  # "Lightning overhead <= 3% at batch 256"
    assert [overrides[f"modes_b{n}"]["modes_batches"] for n in (32, 256)] == ["[32]", "[256]"]


def test_an_unknown_part_is_one_line(tmp_path: Path) -> None:
    bash = shutil.which("bash")
    assert bash is not None
    done = subprocess.run([bash, str(SCRIPT), str(tmp_path), "everything"], capture_output=True, text=True)
    assert done.returncode == 2 and done.stderr.strip() == "error: part 'everything' is not allowed: feed or modes"
