"""A sweep's summary describes that sweep: re-sweeping into an existing hydra.sweep.dir lists only the jobs
of the new sweep (an older results.json next to a failure, or an older sweep's extra jobs, are not its), and a
malformed job file is one line naming the file."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from helpers import FAST, run_cli

from mobilenet_pl.app.errors import ConfigError
from mobilenet_pl.app.results import SWEEP_ID_FILE
from mobilenet_pl.app.sweep import collect
from mobilenet_pl.report import main as report_main

RESULTS = {"model": "mobilenet_v2", "width": 0.25, "resolution": 32, "params": 1, "madds": 2, "metrics": {}}


def job(sweep: Path, name: str, file: str, record: dict[str, object]) -> None:
    (sweep / name).mkdir(parents=True, exist_ok=True)
    (sweep / name / file).write_text(json.dumps(record))


def test_summary_lists_only_the_latest_sweeps_jobs(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    job(sweep, "0", "results.json", {**RESULTS, "sweep_id": "new", "metrics": {"val/acc1": 0.9}})
    job(sweep, "1", "results.json", {**RESULTS, "sweep_id": "old", "metrics": {"val/acc1": 0.5}})
    job(sweep, "1", "failed.json", {"error": "width=-1.0 is not allowed", "sweep_id": "new"})
    job(sweep, "2", "results.json", {**RESULTS, "sweep_id": "old"})  # an older, longer sweep's job
    (sweep / SWEEP_ID_FILE).write_text("new\n")
    rows = {row["job"]: row for row in collect(sweep)}
    assert set(rows) == {"0", "1"}
    assert rows["0"]["val_acc1"] == 0.9 and rows["0"]["error"] is None
    assert rows["1"]["error"] == "width=-1.0 is not allowed" and rows["1"]["val_acc1"] is None


def test_a_sweep_dir_of_an_older_version_lists_every_job(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    job(sweep, "0", "results.json", RESULTS)
    job(sweep, "1", "failed.json", {"error": "boom"})
    assert [row["job"] for row in collect(sweep)] == ["0", "1"]


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", '{"model": "mobilenet_v2"}', ""])
def test_report_on_a_malformed_results_json_names_the_file(
    content: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sweep = tmp_path / "sweep"
    job(sweep, "0", "results.json", RESULTS)
    (sweep / "1").mkdir()
    (sweep / "1" / "results.json").write_text(content)
    with pytest.raises(ConfigError, match=r"results\.json"):
        collect(sweep)
    assert report_main([f"sweep_dir={sweep}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and str(sweep / "1" / "results.json") in err[0], err
    assert not (sweep / "summary.csv").exists()


@pytest.mark.slow
def test_resweeping_into_the_same_dir_with_a_failing_job_shows_that_failure(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    common = [*FAST, "logger=none", "test=false", f"hydra.sweep.dir={sweep}"]
    first = run_cli("mobilenet_pl.train", "-m", "width=0.25,0.35,0.3", *common, cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    # the same dir again: job 1 now fails, and the older sweep had a job 2 this one has not
    second = run_cli("mobilenet_pl.train", "-m", "width=0.25,-1", "auto_resume=false", *common, cwd=tmp_path)
    assert second.returncode == 2, second.stderr[-3000:]
    with (sweep / "summary.csv").open() as handle:
        rows = {row["job"]: row for row in csv.DictReader(handle)}
    assert set(rows) == {"0", "1"}
    assert rows["1"]["error"].startswith("width=-1.0 is not allowed") and not rows["1"]["val_acc1"]
    assert rows["0"]["error"] == "" and rows["0"]["width"] == "0.25"
    assert "1 job(s) failed: 1" in second.stderr
    # report on demand describes the same (latest) sweep
    assert run_cli("mobilenet_pl.report", f"sweep_dir={sweep}", cwd=tmp_path).returncode == 0
    with (sweep / "summary.csv").open() as handle:
        assert {row["job"] for row in csv.DictReader(handle)} == {"0", "1"}
