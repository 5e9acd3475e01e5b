"""``results.json``: the contract that sweeps, reports and automation read from every run dir."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mobilenet_pl._checks import is_finite_number
from mobilenet_pl.lit.atomic import atomic_write

RESULTS_FILE = "results.json"
# written into a sweep dir when a multirun starts; its jobs copy it into their results.json / failed.json, so a
# sweep's summary lists that sweep's jobs only (not an older sweep's files in the same hydra.sweep.dir)
SWEEP_ID_FILE = ".sweep_id"
CONFUSION_FILE = "confusion_matrix.png"  # test (train) or split (eval) confusion matrix, beside results.json
REQUIRED_KEYS = (
    "model",
    "width",
    "resolution",
    "params",
    "madds",
    "metrics",
    "test_samples",
    "checkpoint",
    "last_checkpoint",
    "wall_time_s",
)


def _plain(value: Any) -> Any:
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not is_finite_number(value):
        return None
    return value


def write_results(run_dir: Path, results: dict[str, Any]) -> Path:
    """Write ``results.json`` atomically (a reader never sees half a file)."""
    results = {**results, "metrics": {k: _plain(v) for k, v in results.get("metrics", {}).items()}}
    missing = [k for k in REQUIRED_KEYS if k not in results]
    if missing:
        raise ValueError(f"results are missing {missing}")
    path = run_dir / RESULTS_FILE
    return atomic_write(path, json.dumps(results, indent=2, default=str) + "\n")


def read_results(path: Path) -> dict[str, Any]:
    return json.loads(Path(path).read_text())


def new_sweep_id(sweep_dir: Path) -> str:
    """Start a sweep in ``sweep_dir``: a fresh id in its `SWEEP_ID_FILE`, which the sweep's jobs record."""
    import uuid

    sweep_id = uuid.uuid4().hex
    sweep_dir.mkdir(parents=True, exist_ok=True)
    tmp = sweep_dir / f"{SWEEP_ID_FILE}.tmp"
    tmp.write_text(sweep_id + "\n")
    tmp.replace(sweep_dir / SWEEP_ID_FILE)
    return sweep_id


def read_sweep_id(sweep_dir: Path) -> str | None:
    """The id of the latest sweep started in ``sweep_dir``; None for a dir of an older version or no sweep."""
    try:
        return (Path(sweep_dir) / SWEEP_ID_FILE).read_text().strip() or None
    except OSError:
        return None


INPUT_BOUND_WAIT = 0.2  # above this share of step time spent waiting for batches, a run is input-bound
INPUT_BOUND_ADVICE = (
    "input-bound  training waited for batches: raise data.num_workers, decode image folders on the "
    "accelerator (data.decode_on=device), or use lighter augmentation"
)


def input_bound(results: dict[str, Any]) -> bool:
    """Whether training spent more than `INPUT_BOUND_WAIT` of its timed step time waiting for data."""
    wait = results.get("data_wait_fraction")
    return isinstance(wait, (int, float)) and wait > INPUT_BOUND_WAIT


def _wait_note(results: dict[str, Any]) -> str:
    wait = results.get("data_wait_fraction")
    if not isinstance(wait, (int, float)):
        return ""
    warmup = results.get("train_warmup_steps")
    after = f" after {warmup} warm-up step{'' if warmup == 1 else 's'}" if isinstance(warmup, int) else ""
    return f"{after}, {100 * wait:.0f}% of it waiting for data"


CHANCE_FACTOR = 2.0  # a top-1 under this many times chance (1 / classes) means the model has not learned yet


def chance_level(results: dict[str, Any]) -> float | None:
    """1 / the number of classes, or None where results.json does not say (older runs)."""
    classes = results.get("num_classes")
    return 1 / classes if isinstance(classes, int) and classes >= 2 else None


def chance_note(results: dict[str, Any]) -> str | None:
    """One line, where the run's top-1 (test, else best val) is within `CHANCE_FACTOR` x chance level: it says so
    and what to change. None for a run that learned, or without the numbers."""
    chance, metrics = chance_level(results), results.get("metrics", {})
    key = next((k for k in metrics if k.endswith("/acc1") and k.split("/")[0] != "val"), "val/acc1")
    top1 = metrics.get(key)
    if chance is None or not isinstance(top1, (int, float)) or top1 >= CHANCE_FACTOR * chance:
        return None
    epochs, lr = results.get("epochs"), results.get("lr")
    ran = f" after {epochs} epoch{'' if epochs == 1 else 's'}" if isinstance(epochs, int) else ""
    now = f" (now {lr:g})" if isinstance(lr, (int, float)) else ""
    return (
        f"near chance  {key.split('/')[0]} top-1 {100 * top1:.2f}% is under {CHANCE_FACTOR:g}x chance "
        f"({100 * chance:.2f}% for {results['num_classes']} classes): the model has not learned yet{ran}; "
        f"train longer (trainer.max_epochs, default 10) or change the learning rate optimizer.lr{now}"
    )


def _threads_note(results: dict[str, Any]) -> str:
    threads = results.get("torch_threads")
    return f"; {threads} CPU thread{'' if threads == 1 else 's'}" if isinstance(threads, int) else ""


def format_summary(results: dict[str, Any]) -> str:
    """The few lines printed at the end of a run."""
    m = results["metrics"]

    def pct(key: str) -> str:
        value = m.get(key)
        return f"{100 * value:.2f}%" if isinstance(value, (int, float)) else "n/a"

    lines = [
        f"model        {results['model']} width {results['width']:g} @ {results['resolution']}px: "
        f"{results['params'] / 1e6:.3f} M params, {results['madds'] / 1e6:.1f} M mult-adds",
        f"best val     top-1 {pct('val/acc1')}  top-5 {pct('val/acc5')}",
        f"test         top-1 {pct('test/acc1')}  top-5 {pct('test/acc5')}  on {results['test_samples']} images",
        f"throughput   {results.get('train_images_per_s', 0):.0f} train images/s{_wait_note(results)}; "
        f"wall time {results['wall_time_s']:.0f} s{_threads_note(results)}",
        f"checkpoint   {results['checkpoint']}",
        f"run dir      {results['run_dir']}",
    ]
    run_dir = Path(results["run_dir"])
    lines.append(f"results      {run_dir / RESULTS_FILE}")
    if (run_dir / CONFUSION_FILE).is_file():
        lines.append(f"confusion    {run_dir / CONFUSION_FILE}")
    near_chance = chance_note(results)
    if near_chance:
        lines.insert(3, near_chance)
    skipped = results.get("skipped_images") or {}
    if any(skipped.values()):
        lines.append("unreadable   " + ", ".join(f"{split} {n}" for split, n in skipped.items()) + " (logged above)")
    if input_bound(results):
        lines.append(INPUT_BOUND_ADVICE)
    if results.get("wandb_sync"):
        lines.append(f"W&B offline  sync later with: {results['wandb_sync']}")
    return "\n".join(lines)
