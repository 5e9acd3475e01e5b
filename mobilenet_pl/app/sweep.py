"""A sweep's summary: every job's ``results.json`` (or ``failed.json``) under a multirun dir becomes one row of
``summary.csv`` and one point of ``tradeoff.png`` (accuracy vs mult-adds: the papers' Figures 4 and 5 on your
data). `SweepSummary` writes them at the end of every multirun; ``python -m mobilenet_pl.report`` on demand.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from mobilenet_pl.app.errors import EXIT_BAD_INPUT, ConfigError, one_line
from mobilenet_pl.app.results import CHANCE_FACTOR, RESULTS_FILE, new_sweep_id, read_results, read_sweep_id
from mobilenet_pl.app.runner import FAILED_FILE
from mobilenet_pl.lit.figures import pyplot

COLUMNS = [
    "job",
    "source",  # train: a training run's results.json; eval:<split>: one written by python -m mobilenet_pl.eval
    "model",
    "width",
    "resolution",
    "num_classes",
    "params",
    "madds",
    "val_acc1",
    "test_acc1",
    "test_acc5",
    "test_samples",
    "epochs",
    "wall_time_s",
    "run_dir",
    "error",  # a failed job: its one-line reason (the other columns stay empty)
]
# what a row needs from a results.json
SUMMARY_KEYS = ("model", "width", "resolution", "params", "madds")


def _read_record(path: Path) -> dict[str, Any]:
    """A job's results.json or failed.json, or `ConfigError` naming the file (never a traceback)."""
    try:
        record = read_results(path)
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise ConfigError(f"{path} is not a readable {path.name} ({err.__class__.__name__}: {one_line(err)})") from err
    if not isinstance(record, dict):
        raise ConfigError(f"{path} is not a readable {path.name} (a JSON {type(record).__name__}, not an object)")
    if path.name == RESULTS_FILE:
        missing = [key for key in SUMMARY_KEYS if key not in record]
        if missing or not isinstance(record.get("metrics", {}), dict):
            raise ConfigError(f"{path} is not a readable {path.name} (missing {missing or ['metrics']})")
    return record


def collect(sweep_dir: Path) -> list[dict[str, Any]]:
    """One row per job of the sweep that wrote results.json or failed (failed.json), in job order.

    A sweep dir that a multirun started (its `SWEEP_ID_FILE`) lists only the files of its latest sweep: an
    older sweep's jobs in the same hydra.sweep.dir, or an older results.json next to this sweep's failure, are
    not this sweep's. A malformed file is a `ConfigError` naming it."""
    current = read_sweep_id(sweep_dir)
    jobs: dict[Path, dict[str, dict[str, Any]]] = {}
    for path in [*sweep_dir.rglob(RESULTS_FILE), *sweep_dir.rglob(FAILED_FILE)]:
        record = _read_record(path)
        if current is not None and record.get("sweep_id") != current:
            continue
        jobs.setdefault(path.parent, {})[path.name] = record
    rows = []
    for job_dir in sorted(jobs, key=lambda d: _job_key(d.name)):
        files = jobs[job_dir]
        job = {"job": job_dir.relative_to(sweep_dir).as_posix(), "run_dir": str(job_dir)}
        # within one sweep a job that wrote results and then failed failed; without ids, results win (as before)
        failed = files.get(FAILED_FILE) if current is not None or RESULTS_FILE not in files else None
        if failed is not None:
            rows.append({**dict.fromkeys(COLUMNS), **job, "error": failed.get("error")})
            continue
        results = files[RESULTS_FILE]
        metrics = results.get("metrics", {})
        split = results.get("split")  # only eval writes it; its top-1 is on that split
        rows.append(
            {
                **job,
                "source": f"eval:{split}" if split else "train",
                "model": results["model"],
                "width": results["width"],
                "resolution": results["resolution"],
                "num_classes": results.get("num_classes"),
                "params": results["params"],
                "madds": results["madds"],
                "val_acc1": metrics.get("val/acc1"),
                "test_acc1": metrics.get(f"{split}/acc1" if split and split != "val" else "test/acc1"),
                "test_acc5": metrics.get(f"{split}/acc5" if split and split != "val" else "test/acc5"),
                "test_samples": results.get("test_samples"),
                "epochs": results.get("epochs"),
                "wall_time_s": round(results.get("wall_time_s", 0.0), 1),
                "error": None,
            }
        )
    return rows


def _job_key(name: str) -> tuple[int, str]:
    return (int(name), name) if name.isdigit() else (10**9, name)


def write_summary(rows: list[dict[str, Any]], path: Path) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    return path


def plot_tradeoff(rows: list[dict[str, Any]], path: Path) -> Path:
    """`tradeoff_figure` of ``rows``, saved to ``path``."""
    fig = tradeoff_figure(rows)
    fig.savefig(path, dpi=120)
    pyplot().close(fig)
    return path


def tradeoff_figure(rows: list[dict[str, Any]]):  # type: ignore[no-untyped-def]
    """Accuracy vs mult-adds (log scale); points of one model and resolution are joined by width.

    The y-axis spans 0-100 % with chance level (1 / classes) drawn, so a sweep of runs that learned nothing
    reads as noise at chance, not as a trend. Training runs only, where there are any (eval rows measure
    the same checkpoints again, maybe on another split)."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    rows = [row for row in rows if row["error"] is None]  # failed jobs have no point
    rows = [row for row in rows if row.get("source", "train") == "train"] or rows
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 5.5))
    metric = "test_acc1" if all(r["test_acc1"] is not None for r in rows) else "val_acc1"
    groups: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["model"], row["resolution"]), []).append(row)
    for (model, resolution), members in sorted(groups.items()):
        members.sort(key=lambda r: r["madds"])
        xs = [r["madds"] / 1e6 for r in members]
        ys = [100 * (r[metric] or 0.0) for r in members]
        ax.plot(xs, ys, marker="o", label=f"{model.replace('mobilenet_', '')} @ {resolution}px")
        for r, x, y in zip(members, xs, ys, strict=True):
            ax.annotate(
                f"{model.replace('mobilenet_', '')} {r['width']:g}@{r['resolution']}",
                (x, y),
                textcoords="offset points",
                xytext=(4, 4),
                fontsize=8,
            )
    for classes in sorted({r["num_classes"] for r in rows if isinstance(r.get("num_classes"), int)}):
        ax.axhline(100 / classes, color="grey", linestyle="--", linewidth=1, label=f"chance (1/{classes} classes)")
    ax.set_ylim(0, 100)
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))  # 20, not 2x10^1
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("mult-adds (millions, log scale)")
    ax.set_ylabel(f"{metric.replace('_acc1', '')} top-1 (%)")
    ax.set_title("accuracy vs computation (one point per job)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return fig


def write_report(sweep_dir: str | Path) -> tuple[Path, Path] | None:
    """summary.csv and tradeoff.png in ``sweep_dir``; None when no job finished."""
    sweep_dir = Path(sweep_dir)
    rows = collect(sweep_dir)
    if not rows:
        return None
    return write_summary(rows, sweep_dir / "summary.csv"), plot_tradeoff(rows, sweep_dir / "tradeoff.png")


def _table(header: list[str], cells: list[list[str]]) -> list[str]:
    """Columns as wide as their widest cell: text left-aligned, numbers right-aligned."""
    widths = [max(len(text) for text in column) for column in zip(header, *cells, strict=True)]
    numeric = [all(_is_number(row[i]) for row in cells) for i in range(len(header))]
    return [
        "  ".join(t.rjust(w) if num else t.ljust(w) for t, w, num in zip(row, widths, numeric, strict=True)).rstrip()
        for row in (header, *cells)
    ]


def _is_number(text: str) -> bool:
    return text == "-" or text.replace(".", "", 1).replace("%", "").isdigit()


def _pct(value: float | None) -> str:
    return f"{100 * value:.2f}" if value is not None else "-"


MODEL_HEADER = ["job", "model", "width", "res", "M madds"]


def _model_cells(row: dict[str, Any]) -> list[str]:
    """The cells under `MODEL_HEADER`: which job, which model, what it costs."""
    return [
        str(row["job"]),
        str(row["model"]),
        f"{row['width']:g}",
        str(row["resolution"]),
        f"{row['madds'] / 1e6:.1f}",
    ]


def format_rows(rows: list[dict[str, Any]]) -> str:
    """The report as a table per source: training runs, then evaluations (eval's results.json), then failures."""
    trained = [r for r in rows if r["error"] is None and r.get("source", "train") == "train"]
    evaluated = [r for r in rows if r["error"] is None and r.get("source", "train") != "train"]
    lines = []
    if trained:
        header = [*MODEL_HEADER, "epochs", "val top-1", "test top-1"]
        cells = [
            [
                *_model_cells(r),
                str(r["epochs"]) if r.get("epochs") is not None else "-",
                _pct(r["val_acc1"]),
                _pct(r["test_acc1"]),
            ]
            for r in trained
        ]
        lines += ["training runs", *_table(header, cells)]
    if evaluated:
        header = [*MODEL_HEADER, "split", "top-1", "top-5", "images"]
        cells = [
            [
                *_model_cells(r),
                str(r["source"]).removeprefix("eval:"),
                _pct(r["val_acc1"] if r["source"] == "eval:val" else r["test_acc1"]),
                _pct(r["test_acc5"]),
                str(r["test_samples"]),
            ]
            for r in evaluated
        ]
        lines += [*([""] if lines else []), "evaluations (python -m mobilenet_pl.eval)", *_table(header, cells)]
    failed = [r for r in rows if r["error"] is not None]
    if failed:
        lines += [*([""] if lines else []), "failed jobs", *(f"{r['job']}  {r['error']}" for r in failed)]
    chance = sorted({r["num_classes"] for r in rows if isinstance(r.get("num_classes"), int)})
    if chance:
        lines.append("chance level " + ", ".join(f"{100 / n:.2f}% ({n} classes)" for n in chance))
    warning = near_chance_note(rows)
    if warning:
        lines.append(warning)
    return "\n".join(lines)


def near_chance_note(rows: list[dict[str, Any]]) -> str | None:
    """A line naming the training jobs whose top-1 is under `CHANCE_FACTOR` x chance, and what to change."""
    near = [
        r["job"]
        for r in rows
        if r["error"] is None
        and r.get("source", "train") == "train"
        and isinstance(r.get("num_classes"), int)
        and (r["test_acc1"] if r["test_acc1"] is not None else r["val_acc1"] or 0.0) < CHANCE_FACTOR / r["num_classes"]
    ]
    if not near:
        return None
    return (
        f"near chance  job(s) {', '.join(map(str, near))} scored under {CHANCE_FACTOR:g}x chance level: they have not "
        "learned yet, and their differences are noise; train longer (trainer.max_epochs) or change optimizer.lr"
    )


class SweepSummary(Callback):
    """Hydra callback: write the sweep report when a multirun ends (also for Optuna and SLURM)."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        new_sweep_id(Path(config.hydra.sweep.dir))  # this sweep's jobs record it; the summary lists those only

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            written = write_report(config.hydra.sweep.dir)
            rows = collect(Path(config.hydra.sweep.dir))
        except ConfigError as err:  # a malformed job file: one line, as everywhere
            print(f"error: {err}", file=sys.stderr)
            raise SystemExit(EXIT_BAD_INPUT) from None
        if written:
            print(f"sweep summary: {written[0]}\ntrade-off plot: {written[1]}")
            warning = near_chance_note(rows)
            if warning:
                print(warning)
        failed = [row for row in rows if row["error"] is not None]
        if failed:
            print(
                f"{len(failed)} job(s) failed: {', '.join(row['job'] for row in failed)} (see summary.csv)",
                file=sys.stderr,
            )
            # the other jobs ran and the summary is written; the exit status still tells scripts and CI
            raise SystemExit(EXIT_BAD_INPUT)
