"""Developer sessions: ``nox -s tests lint typecheck docs``.

Sessions use pip-backed venvs: PyTorch comes from pip (from local disk on our machines); uv would not
see those files and would download several GB instead.
"""

from __future__ import annotations

import os

import nox

nox.options.default_venv_backend = "venv"
nox.options.sessions = ["tests", "lint", "typecheck", "docs"]
# a session's venv holds PyTorch (5.3 GB with the CUDA wheels, README.md): built once, then reused;
# ``nox -s tests --no-reuse-existing-virtualenvs`` rebuilds it (after a dependency change)
nox.options.reuse_existing_virtualenvs = True

# Override with e.g. MOBILENET_PL_TORCH="torch==2.5.1 torchvision==0.20.1" on other machines.
TORCH = os.environ.get("MOBILENET_PL_TORCH", "torch==2.14.1 torchvision==0.29.1").split()
# One BLAS/OpenMP thread per process: the suite runs 2 xdist workers and spawns DDP and CLI processes on
# a 2-core machine; oversubscribed OpenMP threads spin and slow everything down by an order of magnitude.
OFFLINE = {
    "WANDB_MODE": "offline",
    "HF_HUB_OFFLINE": "1",
    "PYTHONWARNINGS": "ignore::FutureWarning",
    "OMP_NUM_THREADS": "1",
}


@nox.session
def tests(session: nox.Session) -> None:
    """Run the offline CPU test suite on 2 workers (``nox -s tests -- -k convert`` passes pytest arguments)."""
    session.install(*TORCH)
    session.install("-e", ".[test,export,sweeps,mobile]")
    session.run("pytest", *(session.posargs or ["-n", "2"]), env=OFFLINE)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff check and ruff format --check."""
    session.install("ruff>=0.6")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy on the package."""
    session.install(*TORCH)
    session.install("-e", ".", "mypy>=1.10")
    session.run("mypy", "mobilenet_pl")


@nox.session
def docs(session: nox.Session) -> None:
    """Build the documentation site strictly (any warning fails)."""
    session.install("mkdocs-material>=9.5", "mkdocstrings[python]>=0.25")
    session.run("mkdocs", "build", "--strict", "--site-dir", "site")
