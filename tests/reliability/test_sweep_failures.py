"""A sweep with one bad value records that job's error in summary.csv and runs every other job."""

from __future__ import annotations

import csv
from pathlib import Path

from helpers import FAST, run_cli


def test_a_failed_job_is_recorded_and_the_sweep_goes_on(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    proc = run_cli(
        "mobilenet_pl.train", "-m", "width=0.25,-1,0.35", *FAST, "logger=none", "test=false",
        f"hydra.sweep.dir={sweep}", cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr[-3000:]  # every job ran; the status still says one failed
    assert "error: width=-1.0 is not allowed" in proc.stderr
    with (sweep / "summary.csv").open() as handle:
        rows = {row["job"]: row for row in csv.DictReader(handle)}
    assert set(rows) == {"0", "1", "2"}
    assert rows["1"]["error"].startswith("width=-1.0 is not allowed") and not rows["1"]["model"]
    for job, width in (("0", "0.25"), ("2", "0.35")):  # the job after the failed one ran too
        assert rows[job]["error"] == "" and rows[job]["width"] == width and float(rows[job]["val_acc1"]) >= 0
    assert "1 job(s) failed: 1" in proc.stderr
