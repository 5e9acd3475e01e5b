"""The speed benchmark runs end to end with tiny settings; ratios are reported, never asserted."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from mobilenet_pl.benchmark import SECTIONS, Entry, interleaved, main, make_group

pytest.importorskip("onnxruntime")

TINY = ["steps=2", "resolution=64", "batch_size=4", "infer_batch=4", "repeats=1", "warmup=1", "threads=1"]


def _check_group(group: dict[str, Any], expect_peer: bool = True) -> None:
    assert group["unit"] and isinstance(group["higher_is_better"], bool)
    assert group["entries"]
    for entry in group["entries"].values():
        assert entry["value"] > 0 and entry["samples"] and entry["label"]
        if expect_peer:
            assert isinstance(entry["ratio_to_best_peer"], float) and entry["ratio_to_best_peer"] > 0
    if expect_peer:
        best = group["best_peer"]
        assert group["entries"][best]["ratio_to_best_peer"] == pytest.approx(1.0)


def test_benchmark_every_section_writes_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "bench.json"
    assert main(["model=all", "width=1.0", *TINY, f"json={out}"]) == 0
    text = capsys.readouterr().out
    report = json.loads(out.read_text())
    assert set(report) >= {"config", "environment", "results", "targets", "notes", "wall_time_s"}
    assert report["config"]["resolution"] == 64 and report["config"]["steps"] == 2
    assert report["environment"]["cpu"] and report["environment"]["torch"]
    results = report["results"]
    assert list(results) == list(SECTIONS)

    assert set(results["train"]) == {"v1", "v2"}
    assert set(results["train"]["v2"]["entries"]) == {"ours", "timm", "torchvision"}
    assert set(results["train"]["v1"]["entries"]) == {"ours", "timm"}  # torchvision has no V1
    assert set(results["infer"]) == {"v1 batch 1", "v1 batch 4", "v2 batch 1", "v2 batch 4"}
    assert set(results["pipeline"]) == {"train", "eval"}
    assert set(results["export"]["v2 batch 1"]["entries"]) == {
        "ours onnx",
        "ours int8",
        "ours eager",
        "timm onnx",
        "timm eager",
        "torchvision onnx",
        "torchvision eager",
    }
    for section in ("train", "infer", "pipeline", "export"):
        for group in results[section].values():
            _check_group(group)
    lightning = results["lightning"]["v2"]
    _check_group(lightning)
    assert set(lightning["entries"]) == {"plain", "lightning"}
    assert isinstance(lightning["overhead"], float)

    names = [t["target"] for t in report["targets"]]
    assert len(names) == 5 and any("lightning" in n for n in names)
    for target in report["targets"]:
        assert isinstance(target["ratio"], float) and isinstance(target["pass"], bool)
    assert "x best peer" in text and "targets (ratios measured in this run)" in text
    assert text.count("PASS") + text.count("FAIL") == 5


def test_benchmark_single_section_and_width_without_timm_peer(tmp_path: Path) -> None:
    out = tmp_path / "b.json"
    assert main(["model=v1", "width=0.5", "sections=infer", *TINY, f"json={out}"]) == 0
    report = json.loads(out.read_text())
    assert list(report["results"]) == ["infer"]
    group = report["results"]["infer"]["v1 batch 1"]
    assert list(group["entries"]) == ["ours"] and group["best_peer"] is None  # timm has no V1 at 0.5
    assert group["entries"]["ours"]["ratio_to_best_peer"] is None
    assert any("timm has no mobilenetv1_050" in note for note in report["notes"])
    assert report["targets"] == []


def test_benchmark_runs_without_hydra_omegaconf_wandb(tmp_path: Path) -> None:
    """A bare GPU box may lack the app's dependencies: block them and run the Lightning section."""
    out = tmp_path / "b.json"
    code = f"""
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in ("hydra", "omegaconf", "wandb"):
            raise ModuleNotFoundError(f"No module named {{name!r}}")
        return None
sys.meta_path.insert(0, Block())
from mobilenet_pl.benchmark import main
import mobilenet_pl.export, mobilenet_pl.quantize
code = main({[*TINY, "model=v2", "width=0.35", "sections=lightning,train", f"json={out}"]!r})
assert not any(m.split(".")[0] in ("hydra", "omegaconf", "wandb") for m in sys.modules), "imported a blocked module"
sys.exit(code)
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "lightning" in json.loads(out.read_text())["results"]


@pytest.mark.parametrize(
    ("arg", "message"),
    [
        ("sections=train,warp", "sections must be a comma list of"),
        ("device=tpu", "device must be cpu or cuda, got 'tpu'"),
        ("precision=int4", "precision must be one of ['fp32', 'bf16', 'fp16'], got 'int4'"),
        ("model=v3", "model must be all, v1 or v2, got 'v3'"),
        ("steps=0", "steps must be a int >= 1, got '0'"),
        ("resolution=16", "resolution must be a int >= 32, got '16'"),
        ("channels_last=maybe", "channels_last must be true or false, got 'maybe'"),
        ("depth=3", "unknown argument 'depth=3'"),
    ],
)
def test_benchmark_bad_input_is_one_line(arg: str, message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([arg]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and err.count("\n") == 1


def test_benchmark_help_states_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    text = capsys.readouterr().out
    for default in ("resolution=128 batch_size=16 steps=2", "resolution=224 batch_size=128 steps=20", "repeats=5"):
        assert default in text


def test_interleaved_warms_up_and_rotates_order() -> None:
    calls: list[str] = []
    runners = {name: (lambda name=name: calls.append(name)) for name in "abc"}
    samples = interleaved(runners, calls=2, repeats=3, warmup=1)
    assert calls[:3] == ["a", "b", "c"]  # warm-up, one call each
    timed = calls[3:]
    starts = [timed[i] for i in range(0, len(timed), 6)]
    assert starts == ["a", "b", "c"]  # each repetition starts one runner later
    assert all(len(s) == 3 and min(s) >= 0 for s in samples.values())


def test_make_group_ratios_are_speed_relative_to_best_peer() -> None:
    latency = make_group(
        "ms",
        False,
        {
            "ours": Entry("ours", "ours", 5.0),
            "timm": Entry("timm", "timm", 10.0),
            "tv": Entry("tv", "torchvision", 8.0),
            "ref": Entry("eager", "reference", 1.0),  # never the best peer, however fast
        },
    )
    assert latency["best_peer"] == "tv"
    assert latency["entries"]["ours"]["ratio_to_best_peer"] == pytest.approx(1.6)
    throughput = make_group("images/s", True, {"ours": Entry("o", "ours", 90.0), "timm": Entry("t", "timm", 100.0)})
    assert throughput["entries"]["ours"]["ratio_to_best_peer"] == pytest.approx(0.9)
