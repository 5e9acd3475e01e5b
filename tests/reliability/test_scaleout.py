"""Scale-out faults, simulated on one machine: two "nodes" on loopback (by hand and as SLURM tasks) train the
same job as two local processes, and a rank killed mid-epoch stops the others in bounded time, in one line.

Every process gets a hard timeout and is killed at the end of its test, children included.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from helpers import FAST, max_weight_difference, run_cli

from mobilenet_pl.app.errors import is_collective_failure

DDP_CPU = ["trainer=ddp", "trainer.accelerator=cpu", "trainer.precision=32-true", "logger=none"]
TINY = ["width=0.25", "resolution=32", "+trainer.limit_train_batches=3", *FAST[:1], *FAST[2:]]
DATA = {  # the cheap options of each data set; digits is the default data
    "digits": ["data=digits", "data.batch_size=16"],
    "fake": ["data=fake", "data.train_size=96", "data.val_size=37", "data.test_size=45", "data.batch_size=8"],
}
# long epochs of fake data (32 steps per rank): a kill 0.5 s into epoch 1 lands mid-epoch
LONG_EPOCHS = [
    "data=fake",
    "width=0.25",
    "resolution=32",
    "data.train_size=1024",
    "data.val_size=16",
    "data.test_size=16",
    "data.batch_size=16",
    "trainer.max_epochs=2",
    "+trainer.enable_progress_bar=false",
]
STEPS_PER_EPOCH = 1024 // 16 // 2
# The process-group timeout (trainer.strategy.timeout.seconds) also bounds the start-up rendezvous: every rank
# must have started within it, which on a loaded 2-core CI machine takes more than 10 s. A killed rank's peers
# need no timeout (its connections close), so those tests run under a generous one and check a short exit.
TIMEOUT_S = 30  # the hung-rank test: the timeout is what stops it
KILL_TIMEOUT_S = 120
KILL_EXIT_S = 30  # survivors of a kill -9 exit within this (measured: 1.3-3.2 s)
PROCESS_LIMIT_S = 300  # a hung test fails instead of hanging CI


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def children_of(pid: int) -> list[int]:
    """Processes whose parent is ``pid`` (Lightning's launcher starts local ranks 1.. as children of rank 0)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


class Job:
    """The processes of one DDP job started by hand: one per "node" (or SLURM task), or one local launcher."""

    def __init__(self, cwd: Path) -> None:
        self.cwd = cwd
        self.procs: list[subprocess.Popen[str]] = []

    def start(self, args: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mobilenet_pl.train", *args],
            cwd=self.cwd,
            env={**os.environ, **(env or {})},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.procs.append(proc)
        return proc

    def start_nodes(self, args: list[str], slurm: bool = False, devices: int = 1) -> None:
        """Two "nodes" on loopback: NODE_RANK 0/1 (each launching ``devices`` local ranks), or the variables
        srun sets for 2 tasks of one device each."""
        port = str(free_port())
        for rank in range(2):
            if slurm:
                env = {
                    "SLURM_NTASKS": "2",
                    "SLURM_NTASKS_PER_NODE": "1",
                    "SLURM_NNODES": "2",
                    "SLURM_PROCID": str(rank),
                    "SLURM_LOCALID": "0",
                    "SLURM_NODEID": str(rank),
                    "SLURM_JOB_ID": "4242",
                    "SLURM_JOB_NAME": "train",
                    "SLURM_NODELIST": "127.0.0.1",
                    "MASTER_PORT": port,
                }
            else:
                env = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port, "NODE_RANK": str(rank)}
            self.start([*args, "trainer.num_nodes=2", f"trainer.devices={devices}"], env)

    def finish(self, timeout: float = PROCESS_LIMIT_S) -> list[tuple[int, str, str]]:
        """(status, stdout, stderr) of each process, in start order."""
        outputs = [proc.communicate(timeout=timeout) for proc in self.procs]
        return [(proc.returncode, out, err) for proc, (out, err) in zip(self.procs, outputs, strict=True)]

    def kill_all(self) -> None:
        for proc in self.procs:
            for child in children_of(proc.pid):
                os.kill(child, signal.SIGKILL)
            if proc.poll() is None:
                proc.kill()
            proc.communicate()


@pytest.fixture
def job(tmp_path: Path) -> Iterator[Job]:
    started = Job(tmp_path)
    yield started
    started.kill_all()


def run_local(args: list[str], cwd: Path) -> None:
    proc = run_cli("mobilenet_pl.train", *args, "trainer.devices=2", cwd=cwd, timeout=PROCESS_LIMIT_S)
    assert proc.returncode == 0, proc.stderr[-3000:]


def state(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]


@pytest.fixture(scope="module")
def local_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The reference: each data set trained by 2 local processes (``trainer.devices=2``), once per module."""
    runs = {}
    for data, options in DATA.items():
        run_dir = tmp_path_factory.mktemp(f"local_{data}") / "run"
        run_local([*DDP_CPU, *TINY, *options, f"hydra.run.dir={run_dir}"], run_dir.parent)
        runs[data] = run_dir
    return runs


@pytest.mark.slow
@pytest.mark.parametrize("launch", ["node_rank", "slurm"])
@pytest.mark.parametrize("data", list(DATA))
def test_two_nodes_train_the_same_job_as_two_local_processes(
    data: str, launch: str, local_runs: dict[str, Path], job: Job, tmp_path: Path
) -> None:
    run_dir = tmp_path / "shared_run"
    job.start_nodes([*DDP_CPU, *TINY, *DATA[data], f"hydra.run.dir={run_dir}"], slurm=launch == "slurm")
    for status, _, err in job.finish():
        assert status == 0, err[-3000:]

    # one job: one results.json (global rank 0's), one .hydra/, nothing else written anywhere
    assert [p.relative_to(tmp_path) for p in tmp_path.rglob("results.json")] == [Path("shared_run/results.json")]
    assert sorted(p.name for p in run_dir.iterdir()) == sorted(p.name for p in local_runs[data].iterdir())
    assert not list(run_dir.glob(".ddp_job*"))

    # same data order, same gradients averaged over the same 2 ranks: identical on one machine (gloo sums in
    # the same order); exact equality, as a 1-ulp difference would already mean another reduction or order
    nodes, local = (json.loads((d / "results.json").read_text()) for d in (run_dir, local_runs[data]))
    assert nodes["metrics"] == local["metrics"]
    assert nodes["test_samples"] == local["test_samples"] > 0
    expected = state(local_runs[data])
    got = state(run_dir)
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        assert torch.equal(got[key], value), key


@pytest.mark.slow
def test_two_nodes_of_two_local_ranks_train_the_same_job_as_four_local_processes(job: Job, tmp_path: Path) -> None:
    # each node's first process hands the job to the rank it launches; two nodes share one run dir
    args = [*DDP_CPU, *TINY, *DATA["fake"]]
    local = tmp_path / "local"
    proc = run_cli("mobilenet_pl.train", *args, "trainer.devices=4", f"hydra.run.dir={local}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    shared = tmp_path / "shared_run"
    job.start_nodes([*args, f"hydra.run.dir={shared}"], devices=2)
    for status, _, err in job.finish():
        assert status == 0, err[-3000:]
    assert sorted(p.name for p in shared.iterdir()) == sorted(p.name for p in local.iterdir())
    nodes, single_node = (json.loads((d / "results.json").read_text()) for d in (shared, local))
    assert nodes["metrics"] == single_node["metrics"]
    expected, got = state(local), state(shared)
    assert all(torch.equal(got[key], value) for key, value in expected.items())


def test_nodes_without_a_shared_run_dir_are_refused(tmp_path: Path) -> None:
    proc = run_cli(
        "mobilenet_pl.train", *DDP_CPU, "trainer.num_nodes=2", "trainer.devices=1", cwd=tmp_path, timeout=120
    )
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "hydra.run.dir=" in errors[0] and "several nodes" in errors[0], proc.stderr[-2000:]
    assert not list(tmp_path.rglob("checkpoints"))


@pytest.mark.parametrize(
    "message",
    [
        "[/pytorch/third_party/gloo/gloo/transport/tcp/pair.cc:545] Read error [127.0.0.1]:35736: "
        "Connection reset by peer. This is typically caused by a remote worker hanging",
        "[../third_party/gloo/gloo/transport/tcp/unbound_buffer.cc:81] Timed out waiting 10000ms for send operation",
        "Application timeout caused pair closure",
    ],
)
def test_gloo_errors_of_a_lost_peer_are_collective_failures(message: str) -> None:
    assert is_collective_failure(RuntimeError(message))
    assert is_collective_failure(torch.distributed.DistBackendError("NCCL error"))
    assert not is_collective_failure(RuntimeError("DataLoader worker (pid 12) is killed by signal"))
    assert not is_collective_failure(ValueError("Connection reset by peer"))


def wait_for_file(path: Path, job: Job, timeout: float = 200) -> None:
    deadline = time.monotonic() + timeout
    while not path.is_file():
        for proc in job.procs:
            if proc.poll() is not None:
                raise AssertionError(f"a process exited early: {proc.communicate()[1][-3000:]}")
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.05)


@pytest.mark.slow
@pytest.mark.parametrize("victim", [1, 0])
@pytest.mark.parametrize("launch", ["local", "nodes"])
def test_kill_9_of_one_rank_stops_the_others_in_one_line_and_a_restart_resumes(
    launch: str, victim: int, job: Job, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    args = [*DDP_CPU, *LONG_EPOCHS, f"trainer.strategy.timeout.seconds={KILL_TIMEOUT_S}", f"hydra.run.dir={run_dir}"]
    if launch == "local":
        job.start([*args, "trainer.devices=2"])
    else:
        job.start_nodes(args)
    last = run_dir / "checkpoints" / "last.ckpt"
    wait_for_file(last, job)  # epoch 0 done; epoch 1 is training
    time.sleep(0.5)
    if launch == "local":
        (child,) = children_of(job.procs[0].pid)
        pids = {0: job.procs[0].pid, 1: child}
    else:
        pids = {rank: proc.pid for rank, proc in enumerate(job.procs)}
    os.kill(pids[victim], signal.SIGKILL)
    killed = time.monotonic()
    survivor = pids[1 - victim]
    while running(survivor) and time.monotonic() - killed < KILL_EXIT_S:
        time.sleep(0.02)
    took = time.monotonic() - killed
    print(f"{launch}: rank {1 - victim} exited {took:.2f} s after kill -9 of rank {victim}")
    assert not running(survivor), f"rank {1 - victim} still runs {took:.0f} s after rank {victim} was killed"

    outputs = job.finish(timeout=60)  # a killed launcher's pipes close when its orphaned child exits
    errors = [line for _, out, err in outputs for line in (out + err).splitlines() if line.startswith("error:")]
    statuses = [status for status, _, _ in outputs]
    assert len(errors) == 1, "\n".join(err[-3000:] for _, _, err in outputs)
    assert "Traceback" not in "".join(err for _, _, err in outputs)
    line = errors[0]
    assert f"rank {1 - victim} stopped in epoch 1" in line and f"lost rank {victim} " in line, line
    assert f"the last checkpoint is {last}" in line and "run the same command again" in line, line
    step = int(re.search(r"\(step (\d+)\)", line).group(1))  # type: ignore[union-attr]
    assert STEPS_PER_EPOCH <= step < 2 * STEPS_PER_EPOCH, line  # mid-epoch 1
    if launch == "nodes":
        assert statuses[1 - victim] == 2 and statuses[victim] == -signal.SIGKILL
    elif victim == 1:
        assert statuses == [2]  # the launching rank reports; Lightning's watcher did not SIGKILL it

    saved = torch.load(last, map_location="cpu", weights_only=True)  # written atomically: whole, at epoch 0
    assert saved["epoch"] == 0 and saved["global_step"] == STEPS_PER_EPOCH
    assert not list(run_dir.rglob("*.tmp-*")) and not (run_dir / "results.json").exists()

    # the same command in the same run dir resumes from last.ckpt (auto_resume) and finishes the job
    restart = Job(tmp_path)
    try:
        if launch == "local":
            restart.start([*args, "trainer.devices=2"])
        else:
            restart.start_nodes(args)
        outputs = restart.finish()
    finally:
        restart.kill_all()
    for status, _, err in outputs:
        assert status == 0, err[-3000:]
    _, out, err = outputs[0]  # Lightning's lines go to the job's log handler (stdout) or its own (stderr)
    assert f"Restoring states from the checkpoint path at {last}" in out + err
    results = json.loads((run_dir / "results.json").read_text())
    assert results["epochs"] == 2 and results["test_samples"] == 16


@pytest.mark.slow
def test_kill_9_of_the_launching_rank_of_three_is_reported_once(job: Job, tmp_path: Path) -> None:
    """Rank 0 launched ranks 1 and 2 and dies: both are orphaned, and only local rank 1 reports it."""
    run_dir = tmp_path / "run"
    args = [*DDP_CPU, *LONG_EPOCHS, f"trainer.strategy.timeout.seconds={KILL_TIMEOUT_S}", f"hydra.run.dir={run_dir}"]
    job.start([*args, "trainer.devices=3"])
    wait_for_file(run_dir / "checkpoints" / "last.ckpt", job)
    time.sleep(0.5)
    launched = children_of(job.procs[0].pid)
    assert len(launched) == 2
    os.kill(job.procs[0].pid, signal.SIGKILL)
    deadline = time.monotonic() + KILL_EXIT_S
    while any(running(pid) for pid in launched) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not any(running(pid) for pid in launched), "orphaned ranks still run"
    ((_, out, err),) = job.finish(timeout=60)
    errors = [line for line in (out + err).splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in err, err[-3000:]
    assert errors[0].startswith("error: rank 1 stopped in epoch 1") and "lost rank 0 " in errors[0], errors[0]


@pytest.mark.slow
def test_a_hung_rank_is_given_up_after_the_timeout_even_with_a_sigterm_in_between(job: Job, tmp_path: Path) -> None:
    # rank 1 stops answering (SIGSTOP: no socket closes); rank 0 then gets SIGTERM, whose handler in Lightning
    # broadcasts to every rank: bounded by trainer.strategy.timeout.seconds, not Lightning's 30 minutes
    run_dir = tmp_path / "run"
    args = [*DDP_CPU, *LONG_EPOCHS, f"trainer.strategy.timeout.seconds={TIMEOUT_S}", f"hydra.run.dir={run_dir}"]
    job.start_nodes(args)
    wait_for_file(run_dir / "checkpoints" / "last.ckpt", job)
    time.sleep(0.5)
    hung, survivor = job.procs[1], job.procs[0]
    hung.send_signal(signal.SIGSTOP)
    time.sleep(0.5)
    survivor.send_signal(signal.SIGTERM)
    stopped = time.monotonic()
    try:
        _, err = survivor.communicate(timeout=3 * TIMEOUT_S)
    finally:
        hung.kill()
    took = time.monotonic() - stopped
    print(f"rank 0 exited {took:.2f} s after rank 1 hung (timeout {TIMEOUT_S} s)")
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert survivor.returncode == 2 and len(errors) == 1, err[-3000:]
    assert "lost rank 1 " in errors[0] and "last.ckpt" in errors[0], errors[0]
    assert took >= TIMEOUT_S - 1, "gave up before the timeout: the hang was not what stopped it"
    torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)


@pytest.mark.slow
@pytest.mark.parametrize(("data", "world"), [("digits", 2), ("fake", 2), ("fake", 3)])
def test_ddp_resume_gives_identical_weights_to_an_uninterrupted_run(data: str, world: int, tmp_path: Path) -> None:
    """Exact resume holds under DDP too: every rank's sampler position and per-step reseeding come back, and with
    3 processes the gradients are summed in rank order (``DeterministicGradientSum``; without it 0.0047 apart)."""
    common = [
        *DDP_CPU,
        f"trainer.devices={world}",
        *DATA[data],
        "width=0.25",
        "resolution=32",
        "trainer.deterministic=true",
        "trainer.max_epochs=2",
        "+trainer.limit_train_batches=3",
        "+trainer.limit_val_batches=1",
        "+trainer.enable_progress_bar=false",
        "test=false",
    ]
    tests_dir = str(Path(__file__).resolve().parents[1])  # helpers.StopAfterEpoch, importable in every rank
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [tests_dir, os.environ.get("PYTHONPATH")]))}

    def run(name: str, *extra: str) -> Path:
        run_dir = tmp_path / name
        args = [sys.executable, "-m", "mobilenet_pl.train", *common, *extra, f"hydra.run.dir={run_dir}"]
        proc = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=PROCESS_LIMIT_S)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return run_dir

    straight = state(run("straight"))
    first = run("first", "+callbacks.stop._target_=helpers.StopAfterEpoch", "+callbacks.stop.epoch=0")
    resumed = state(run("resumed", f"ckpt_path={first / 'checkpoints' / 'last.ckpt'}"))

    difference = max_weight_difference(straight, resumed)
    print(f"{data}, {world} ranks: max abs weight difference after resume {difference:.3g}")
    assert difference <= 1e-6
    assert max_weight_difference(straight, state(first)) > 1e-3  # the interrupted run had not got there yet
