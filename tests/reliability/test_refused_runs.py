"""A run that is refused writes nothing: whatever the reason (a finished run's dir, another model's last.ckpt,
a run dir in use, a bad value or checkpoint), the run dir's record (``.hydra/``, results.json, checkpoints)
stays byte for byte as it was. Hydra's record is saved by the job only once the run's checks pass."""

from __future__ import annotations

import fcntl
import shutil
from pathlib import Path

import pytest
from helpers import FAST

from mobilenet_pl.eval import main as eval_main
from mobilenet_pl.train import main as train_main

BASE = [*FAST, "logger=none", "test=false", "width=0.25"]


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("finished") / "run"
    assert train_main([*BASE, f"hydra.run.dir={run_dir}"]) == 0
    assert (run_dir / ".hydra" / "config.yaml").is_file() and (run_dir / "results.json").is_file()
    return run_dir


def snapshot(run_dir: Path) -> dict[str, bytes]:
    """Every file of the run dir but the lock (which says who holds the dir now)."""
    return {
        path.relative_to(run_dir).as_posix(): path.read_bytes()
        for path in sorted(run_dir.rglob("*"))
        if path.is_file() and path.name != ".lock"
    }


def refused(main: object, args: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    status = main(args)  # type: ignore[operator]
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
    assert status == 2 and len(lines) == 1, lines
    return lines[0]


REASONS = {
    "auto_resume of the finished run": ([], "holds a finished run"),
    "auto_resume of another model": (["width=0.5", "DROP_RESULTS"], "this run builds mobilenet_v2 width 0.5"),
    "bad value": (["optimizer.lr=-1"], "optimizer.lr=-1"),
    "bad resume checkpoint": (["ckpt_path=EMPTY"], "the file is empty"),
    "unknown key": (["+modle=v1"], "modle"),
    "missing data folder": (["data=imagefolder", "data.root=/nonexistent/images"], "data.root="),
    "run dir in use": (["LOCK"], "is in use by another run"),
}


@pytest.mark.parametrize("reason", list(REASONS))
def test_a_refused_training_run_leaves_the_run_dir_as_it_was(
    reason: str, finished: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = tmp_path / "run"
    shutil.copytree(finished, run_dir)
    extra, expected = REASONS[reason]
    if "DROP_RESULTS" in extra:  # an interrupted run: its last.ckpt is what auto_resume picks up
        (run_dir / "results.json").unlink()
    empty = tmp_path / "empty.ckpt"
    empty.touch()
    args = [a.replace("EMPTY", str(empty)) for a in extra if a not in ("DROP_RESULTS", "LOCK")]
    before = snapshot(run_dir)
    with open(run_dir / ".lock", "a+") as lock:
        if "LOCK" in extra:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        line = refused(train_main, [*BASE, f"hydra.run.dir={run_dir}", *args], capsys)
    assert expected in line, line
    assert snapshot(run_dir) == before


def test_a_refused_evaluation_leaves_its_run_dir_as_it_was(
    finished: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = tmp_path / "eval"
    ckpt = finished / "checkpoints" / "last.ckpt"
    assert eval_main([f"ckpt_path={ckpt}", f"hydra.run.dir={run_dir}", "split=val"]) == 0
    before = snapshot(run_dir)
    assert ".hydra/overrides.yaml" in before and "results.json" in before
    line = refused(eval_main, [f"ckpt_path={tmp_path / 'missing.ckpt'}", f"hydra.run.dir={run_dir}"], capsys)
    assert "missing.ckpt" in line and "is not allowed" in line
    assert snapshot(run_dir) == before


def test_the_record_of_an_accepted_run_is_hydras(finished: Path) -> None:
    """The job writes what Hydra would have: the task config, Hydra's config and the overrides."""
    record = finished / ".hydra"
    assert "hydra.run.dir=" not in (record / "overrides.yaml").read_text()
    assert "width=0.25" in (record / "overrides.yaml").read_text()
    hydra_yaml = (record / "hydra.yaml").read_text()
    assert "output_subdir: .hydra" in hydra_yaml and "output_subdir=null" not in hydra_yaml
    assert "width: 0.25" in (record / "config.yaml").read_text()


@pytest.mark.parametrize("args", [["optimizer.lr=-1"], ["ckpt_path=/nonexistent/last.ckpt"], ["+recipe.typo=1"]])
def test_a_refused_run_in_a_new_run_dir_leaves_no_dir(
    args: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = tmp_path / "new" / "run"
    refused(train_main, [*BASE, f"hydra.run.dir={run_dir}", *args], capsys)
    assert not run_dir.exists() and list(tmp_path.iterdir()) == []  # the parent Hydra made is gone too


def test_a_refused_run_with_the_timestamped_default_leaves_no_date_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "outputs" / "an earlier run").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    refused(train_main, [*BASE, "optimizer.lr=-1"], capsys)
    assert [p.name for p in (tmp_path / "outputs").iterdir()] == ["an earlier run"]  # no outputs/DATE left


def test_a_refused_run_leaves_an_existing_empty_dir_in_place(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = tmp_path / "made_by_the_user"
    run_dir.mkdir()
    refused(train_main, [*BASE, f"hydra.run.dir={run_dir}", "optimizer.lr=-1"], capsys)
    assert run_dir.is_dir()  # not ours to remove


def test_a_refused_evaluation_in_a_new_dir_leaves_no_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run_dir = tmp_path / "eval" / "new"
    refused(eval_main, [f"ckpt_path={tmp_path / 'missing.ckpt'}", f"hydra.run.dir={run_dir}"], capsys)
    assert not run_dir.exists()
