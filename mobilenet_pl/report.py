"""Sweep report: ``python -m mobilenet_pl.report sweep_dir=PATH``.

Reads every job's ``results.json`` under a multirun dir and writes ``summary.csv`` (one row per job)
and ``tradeoff.png`` (accuracy vs mult-adds, one labelled point per job: the papers' Figures 4 and 5
on your data). Runs by itself at the end of every multirun through the ``SweepSummary`` Hydra callback.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from omegaconf import DictConfig

from mobilenet_pl.app.errors import ConfigError
from mobilenet_pl.app.results import RESULTS_FILE
from mobilenet_pl.app.runner import run_tool
from mobilenet_pl.app.sweep import collect, format_rows, write_report


def report(cfg: DictConfig) -> None:
    sweep_dir = Path(cfg.sweep_dir).expanduser()
    if not sweep_dir.is_dir():
        raise ConfigError(f"sweep_dir={cfg.sweep_dir!r} is not a folder")
    written = write_report(sweep_dir)
    if written is None:
        raise ConfigError(f"sweep_dir={cfg.sweep_dir!r} holds no {RESULTS_FILE} (did any job finish?)")
    print(format_rows(collect(sweep_dir)))
    print(f"summary: {written[0]}\nplot: {written[1]}")


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m mobilenet_pl.report`` and the ``mobilenet-pl-report`` console script."""
    return run_tool("report", report, argv)


if __name__ == "__main__":
    sys.exit(main())
