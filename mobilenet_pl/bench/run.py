"""Runs the selected sections in order and writes the report."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from mobilenet_pl.bench.app import bench_app
from mobilenet_pl.bench.deploy import bench_deploy
from mobilenet_pl.bench.export import bench_export
from mobilenet_pl.bench.lightning import bench_lightning
from mobilenet_pl.bench.modes import bench_modes
from mobilenet_pl.bench.network import bench_infer, bench_train
from mobilenet_pl.bench.pipeline import bench_pipeline
from mobilenet_pl.bench.report import environment, format_table
from mobilenet_pl.bench.settings import SECTIONS
from mobilenet_pl.bench.step import Config
from mobilenet_pl.lit.atomic import atomic_write

BENCHES: dict[str, Callable[[Config, list[str]], dict[str, Any]]] = {
    "train": bench_train,
    "infer": bench_infer,
    "lightning": bench_lightning,
    "pipeline": bench_pipeline,
    "export": bench_export,
    "app": bench_app,
    "modes": bench_modes,
    "deploy": bench_deploy,
}


def run(cfg: Config) -> dict[str, Any]:
    """Run the selected sections; returns everything that goes into the JSON file."""
    if cfg.device == "cuda":
        torch.backends.cudnn.benchmark = True  # for every contender alike
    notes: list[str] = []
    results: dict[str, Any] = {}
    started = time.perf_counter()
    threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    try:
        for section in SECTIONS:
            if section in cfg.sections:
                section_start = time.perf_counter()
                results[section] = BENCHES[section](cfg, notes)
                print(f"[{section}: {time.perf_counter() - section_start:.0f} s]", file=sys.stderr, flush=True)
        env = environment(cfg)
    finally:
        torch.set_num_threads(threads)
    return {
        "config": asdict(cfg),
        "environment": env,
        "results": results,
        "notes": notes,
        "wall_time_s": time.perf_counter() - started,
    }


def print_report(cfg: Config, report: dict[str, Any]) -> None:
    env = report["environment"]
    hardware = env["gpu"] or f"{env['cpu']} ({env['cpu_count']} cores, {env['torch_threads']} torch threads)"
    print(
        f"mobilenet_pl benchmark on {hardware}: width {cfg.width:g}, resolution {cfg.resolution}, batch {cfg.batch_size}, "
        f"{cfg.device} {cfg.precision}, channels_last={cfg.channels_last}, compile={cfg.compile}, "
        f"median of {cfg.repeats} interleaved repetitions x {cfg.steps} steps"
    )
    print(format_table(report["results"]))
    for note in report["notes"]:
        print(f"note: {note}")
    if cfg.json:
        Path(cfg.json).parent.mkdir(parents=True, exist_ok=True)
        # whole or not at all: a run stopped while writing (a time limit's SIGINT) leaves no half a file
        atomic_write(cfg.json, json.dumps(report, indent=2))
        print(f"results: {cfg.json}")
