"""The speed benchmark runs end to end with tiny settings; ratios are reported, never asserted."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import torch

from mobilenet_pl.app.timing import Entry, interleaved, make_group
from mobilenet_pl.bench.settings import SECTIONS
from mobilenet_pl.benchmark import main

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
    assert main(["family=all", "width=1.0", *TINY, f"json={out}"]) == 0
    text = capsys.readouterr().out
    report = json.loads(out.read_text())
    assert set(report) >= {"config", "environment", "results", "notes", "wall_time_s"}
    assert "targets" not in report  # goals live in docs/performance.md, not in product output
    assert report["config"]["resolution"] == 64 and report["config"]["steps"] == 2
    env = report["environment"]
    assert env["cpu"] and env["collect_env"]["torch_version"].startswith(torch.__version__.split("+")[0])
    results = report["results"]
    assert list(results) == [s for s in SECTIONS if s not in ("app", "modes", "deploy")]  # the default sections

    assert set(results["train"]) == {"v1", "v2"}
    assert set(results["train"]["v2"]["entries"]) == {"ours", "timm", "torchvision"}
    assert set(results["train"]["v1"]["entries"]) == {"ours", "timm"}  # torchvision has no V1
    assert set(results["infer"]) == {"v1 batch 1", "v1 batch 4", "v2 batch 1", "v2 batch 4"}
    workers = min(2, os.cpu_count() or 1)  # the pipeline section's DataLoader rows
    assert set(results["pipeline"]) == {"train", "eval", f"{workers} worker{'s' if workers > 1 else ''}"}
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

    assert "x best peer" in text
    assert "PASS" not in text and "FAIL" not in text


def test_benchmark_app_section_runs_the_training_app(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Both decode_on variants of the real app, the network alone and the pipeline alone, with ratios."""
    out = tmp_path / "app.json"
    args = ["sections=[app]", "family=v2", "width=0.25", *TINY, "app_images=12", "app_classes=2", "app_steps=6"]
    assert main([*args, "app_workers=1", f"json={out}"]) == 0
    text = capsys.readouterr().out
    (group,) = json.loads(out.read_text())["results"]["app"].values()
    entries = group["entries"]
    assert set(entries) == {"network", "app workers", "app device", "pipeline workers", "pipeline device"}
    assert group["best_peer"] == "network"
    for key, entry in entries.items():
        assert entry["value"] > 0, key
        # ratio = this row's images/s over the network row's
        assert entry["ratio_to_best_peer"] == pytest.approx(entry["value"] / entries["network"]["value"])
    assert set(group["data_wait_fraction"]) == {"workers", "device"}
    assert all(0 < wait < 1 for wait in group["data_wait_fraction"].values())
    # 12 images / batch 4 = 3 batches an epoch: the app times from its third step (warm-up capped at 2)
    assert group["app_warmup_steps"] == {"workers": 2, "device": 2}
    assert "decode_on=device: share of step time waiting for data" in text


@pytest.mark.slow
def test_benchmark_deploy_section_compares_formats_in_one_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Float and INT8 .pte, float and INT8 ONNX and torchvision's eager INT8: latency and size, one run."""
    pytest.importorskip("executorch")
    out = tmp_path / "deploy.json"
    assert main(["sections=[deploy]", "width=0.25", *TINY, f"json={out}"]) == 0
    text = capsys.readouterr().out
    report = json.loads(out.read_text())
    latency, size = report["results"]["deploy"]["v2 batch 1"], report["results"]["deploy"]["v2 file size"]
    ours = {"pte", "pte int8", "onnx", "onnx int8"}
    torchvision_ran = "torchvision int8" in latency["entries"]
    assert set(latency["entries"]) == ours | ({"torchvision int8"} if torchvision_ran else set())
    assert torchvision_ran or any("torchvision's INT8 mobilenet_v2 did not run" in n for n in report["notes"])
    for group in (latency, size):
        assert all(entry["value"] > 0 for entry in group["entries"].values())
    assert size["entries"]["pte int8"]["value"] < 0.5 * size["entries"]["pte"]["value"]
    assert "ExecuTorch .pte int8" in text and report["environment"]["executorch"]


def test_benchmark_modes_section_checks_losses(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Eager only here (compiling takes minutes on a CPU): rows per batch size, and the loss check's shape."""
    out = tmp_path / "modes.json"
    args = ["sections=[modes]", "family=v2", "width=0.25", *TINY, "modes=[eager,cudagraphs]", "modes_batches=[2,3]"]
    assert main([*args, f"json={out}"]) == 0
    report = json.loads(out.read_text())
    results = report["results"]["modes"]
    assert set(results) == {"v2 batch 2", "v2 batch 3"}
    for group in results.values():
        assert set(group["entries"]) == ({"eager", "cudagraphs"} if torch.cuda.is_available() else {"eager"})
        check = group["loss_check"]["eager"]
        assert len(check["losses"]) == 3 and check["correct"]
        # eager fp32 against eager float64: rounding only, not zero, far from a wrong gradient
        assert 0 < check["loss_rel_error"] < 1e-4 and 0 < check["update_rel_error"] < 0.1
        assert check["losses"][0] == pytest.approx(group["loss_check"]["reference_loss"], rel=1e-4)
        assert check["losses"][2] != check["losses"][0]  # the SGD steps changed the weights
    if not torch.cuda.is_available():
        assert any("cudagraphs" in note and "skipped" in note for note in report["notes"])


def test_benchmark_modes_flags_a_mode_that_computes_something_else(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The loss check can fail: a "compiled" model whose logits are scaled by 1.5 is reported WRONG."""

    class Scaled(torch.nn.Module):
        def __init__(self, model: torch.nn.Module) -> None:
            super().__init__()
            self.model = model

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return 1.5 * self.model(x)

    monkeypatch.setattr(torch, "compile", lambda model, mode=None: Scaled(model))
    out = tmp_path / "modes.json"
    args = ["sections=[modes]", "family=v2", "width=0.25", *TINY, "modes=[eager,compile]", "modes_batches=[4]"]
    assert main([*args, f"json={out}"]) == 0
    (group,) = json.loads(out.read_text())["results"]["modes"].values()
    assert group["loss_check"]["eager"]["correct"] and not group["loss_check"]["compile"]["correct"]
    assert "WRONG" in capsys.readouterr().out


@pytest.mark.slow
def test_benchmark_modes_compile_matches_eager(tmp_path: Path) -> None:
    out = tmp_path / "modes.json"
    args = ["sections=[modes]", "family=v2", "width=0.25", *TINY, "modes=[eager,compile]", "modes_batches=[4]"]
    assert main([*args, f"json={out}"]) == 0
    (group,) = json.loads(out.read_text())["results"]["modes"].values()
    assert group["entries"]["compile"]["value"] > 0
    assert group["loss_check"]["compile"]["correct"], group["loss_check"]


def test_benchmark_single_section_and_width_without_timm_peer(tmp_path: Path) -> None:
    out = tmp_path / "b.json"
    assert main(["family=v1", "width=0.5", "sections=[infer]", *TINY, f"json={out}"]) == 0
    report = json.loads(out.read_text())
    assert list(report["results"]) == ["infer"]
    group = report["results"]["infer"]["v1 batch 1"]
    assert list(group["entries"]) == ["ours"] and group["best_peer"] is None  # timm has no V1 at 0.5
    assert group["entries"]["ours"]["ratio_to_best_peer"] is None
    assert any("timm has no mobilenetv1_050" in note for note in report["notes"])


@pytest.mark.parametrize(
    ("arg", "message"),
    [
        (
            "sections=[train,warp]",
            "Invalid value 'warp', expected one of [train, infer, lightning, pipeline, export, app, modes, deploy]",
        ),
        ("modes=[jit]", "Invalid value 'jit', expected one of [eager, compile, cudagraphs]"),
        ("modes_batches=[32,0]", "modes_batches=[32, 0] is not allowed: a list of whole numbers >= 1"),
        ("app_steps=0", "app_steps=0 is not allowed: app_steps must be a whole number >= 1"),
        (
            "sections=[app] app_images=8 batch_size=8",
            "app_images=8 is not allowed: app_images must be >= 2 x batch_size (8) and >= app_classes (10)",
        ),
        ("device=tpu", "Invalid value 'tpu', expected one of [cpu, cuda]"),
        ("precision=int4", "Invalid value 'int4', expected one of [fp32, bf16, fp16]"),
        ("family=v3", "Invalid value 'v3', expected one of [all, v1, v2]"),
        ("steps=0", "steps=0 is not allowed: steps must be a whole number >= 1"),
        ("resolution=16", "resolution=16 is not allowed: resolution must be a whole number >= 32"),
        ("channels_last=maybe", "Value 'maybe' is not a valid bool"),
        ("depth=3", "unknown key 'depth'; choose from: "),
    ],
)
def test_benchmark_bad_input_is_one_line(arg: str, message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(arg.split()) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and err.count("\n") == 1


def test_benchmark_help_states_device_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    text = capsys.readouterr().out
    for default in ("null: cpu 128, cuda 224", "null: cpu 16, cuda 128", "repeats: 5"):
        assert default in text


def test_interleaved_warms_up_and_rotates_order() -> None:
    calls: list[str] = []
    runners = {name: (lambda name=name: calls.append(name)) for name in "abc"}
    samples = interleaved(runners, calls=2, repeats=3, warmup=1)
    assert calls[:3] == ["a", "b", "c"]  # warm-up, one call each
    timed = calls[3:]
    block = 2 + 2  # Timer.timeit's own two warm-up calls, then the two timed calls
    assert len(timed) == 3 * 3 * block
    assert all(len(set(timed[i : i + block])) == 1 for i in range(0, len(timed), block))  # one runner per block
    starts = [timed[i] for i in range(0, len(timed), 3 * block)]
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
