"""A run that learned nothing says so: the summary, the sweep report and its trade-off plot show chance level;
the report's table keeps eval rows apart from training rows and its columns aligned."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mobilenet_pl.app.results import chance_note, format_summary
from mobilenet_pl.app.sweep import collect, format_rows, tradeoff_figure, write_report

RESULTS: dict[str, Any] = {
    "model": "mobilenet_v2",
    "width": 0.5,
    "resolution": 32,
    "params": 700_000,
    "madds": 27_700_000,
    "metrics": {"val/acc1": 0.0861, "test/acc1": 0.0836, "test/acc5": 0.5},
    "test_samples": 359,
    "checkpoint": None,
    "last_checkpoint": None,
    "wall_time_s": 10.0,
    "num_classes": 10,
    "epochs": 2,
    "lr": 0.002,
}


def test_summary_says_a_run_at_chance_has_not_learned(tmp_path: Path) -> None:
    summary = format_summary({**RESULTS, "run_dir": str(tmp_path)})
    line = next(line for line in summary.splitlines() if line.startswith("near chance"))
    assert "8.36%" in line and "10.00% for 10 classes" in line and "after 2 epochs" in line
    assert "trainer.max_epochs" in line and "optimizer.lr (now 0.002)" in line


def test_summary_states_the_cpu_thread_count(tmp_path: Path) -> None:
    assert "; 1 CPU thread" in format_summary({**RESULTS, "run_dir": str(tmp_path), "torch_threads": 1})
    assert "; 2 CPU threads" in format_summary({**RESULTS, "run_dir": str(tmp_path), "torch_threads": 2})


def test_no_chance_note_for_a_run_that_learned_or_without_the_class_count() -> None:
    learned = {**RESULTS, "metrics": {"test/acc1": 0.98}}
    assert chance_note(learned) is None
    assert chance_note({k: v for k, v in RESULTS.items() if k != "num_classes"}) is None  # older results.json
    assert chance_note({**RESULTS, "metrics": {"val/acc1": 0.19}}) is not None  # no test: best val counts
    assert chance_note({**RESULTS, "metrics": {"test/acc1": 0.21}}) is None  # 2x chance is the line


def test_summary_names_results_json_and_the_confusion_matrix(tmp_path: Path) -> None:
    assert f"results      {tmp_path / 'results.json'}" in format_summary({**RESULTS, "run_dir": str(tmp_path)})
    (tmp_path / "confusion_matrix.png").write_bytes(b"png")
    assert f"confusion    {tmp_path / 'confusion_matrix.png'}" in format_summary({**RESULTS, "run_dir": str(tmp_path)})


def _sweep(root: Path) -> Path:
    for job, (width, top1) in enumerate([(0.25, 0.078), (0.5, 0.084), (1.0, 0.081)]):
        (root / str(job)).mkdir(parents=True)
        metrics = {"val/acc1": top1, "test/acc1": top1, "test/acc5": 0.5}
        results = {**RESULTS, "width": width, "madds": int(20e6 * width), "metrics": metrics}
        (root / str(job) / "results.json").write_text(json.dumps(results))
    evaluated = root / "eval" / "2026-01-01" / "12-00-00"
    evaluated.mkdir(parents=True)
    metrics = {"test/acc1": 0.9833, "test/acc5": 1.0, "test/loss": 0.1}
    (evaluated / "results.json").write_text(json.dumps({**RESULTS, "split": "test", "metrics": metrics}))
    return root


def test_report_keeps_eval_rows_apart_and_aligns_columns(tmp_path: Path) -> None:
    rows = collect(_sweep(tmp_path))
    assert [r["source"] for r in rows] == ["train", "train", "train", "eval:test"]
    text = format_rows(rows).splitlines()
    training = text[text.index("training runs") + 1 : text.index("")]
    evaluations = text[text.index("evaluations (python -m mobilenet_pl.eval)") + 1 :][:2]
    for table in (training, evaluations):
        at = table[0].index("model")  # text: left-aligned under its header
        assert all(line[at - 1] == " " and line[at] != " " for line in table[1:]), table
        end = table[0].index("res") + len("res")  # numbers: right-aligned under theirs
        assert all(line[end - 1] != " " and line[end] == " " for line in table[1:]), table
    assert all("98.33" not in line for line in training) and "98.33" in evaluations[1]
    assert any(line.startswith("near chance") and "0, 1, 2" in line for line in text)
    assert "chance level 10.00% (10 classes)" in text


def test_tradeoff_plot_shows_chance_and_the_whole_scale(tmp_path: Path) -> None:
    sweep = _sweep(tmp_path)
    fig = tradeoff_figure(collect(sweep))
    ax = fig.axes[0]
    assert ax.get_ylim() == (0.0, 100.0)  # noise at chance does not fill the plot
    chance = [line for line in ax.get_lines() if line.get_label().startswith("chance")]
    assert len(chance) == 1 and list(chance[0].get_ydata()) == [10.0, 10.0]
    assert ax.xaxis.get_major_formatter()(20.0, 0) == "20"  # not 2x10^1
    assert len(ax.get_lines()) == 2  # the training line and chance: the eval row is not a point
    assert write_report(sweep) is not None and (sweep / "tradeoff.png").stat().st_size > 10_000
