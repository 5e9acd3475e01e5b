"""Writing outputs safely: nothing the command did not create is overwritten or deleted.

Every export is written under a unique temporary name in a private folder beside its destination
(`tempfile.mkdtemp`, same file system) and moved into place in one step when it is complete: a hard
link, which fails rather than replace a file that appeared meanwhile, or ``os.replace`` with
``overwrite=true``. Intermediates (quantize's float model, onnxruntime's pre-processed graph) live in
a private temporary folder and never beside the user's files. The folder is removed on success and on
failure; the destination folder is probed for writing before any work starts (`app.runner.check_writable`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from mobilenet_pl.app.errors import ConfigError

STAGING_PREFIX = ".mobilenet_pl-"


@contextlib.contextmanager
def staged_output(key: str, path: Path, overwrite: bool) -> Iterator[Path]:
    """A temporary file path to write; when the block ends without error it is moved to ``path``.

    Without ``overwrite`` a file that appeared at ``path`` meanwhile is kept and the move is refused.
    """
    created = [p for p in reversed(path.parents) if not p.exists()]
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=path.parent))
    try:
        temporary = staging / path.name
        yield temporary
        publish(key, temporary, path, overwrite)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        for folder in reversed(created):  # folders this command made, left empty: removed again
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def publish(key: str, temporary: Path, path: Path, overwrite: bool) -> None:
    """Move the finished ``temporary`` to ``path`` in one step (same file system)."""
    if path.suffix == ".ckpt" and path.exists():
        raise ConfigError(f"{key}={str(path)!r} is not allowed: it would replace a checkpoint")
    if overwrite:
        os.replace(temporary, path)
        return
    try:
        os.link(temporary, path)  # fails if path exists: never replaces a file created meanwhile
    except FileExistsError:
        raise ConfigError(
            f"{key}={str(path)!r} is not allowed: the file exists; set overwrite=true to replace it or choose another {key}"
        ) from None
    except OSError:  # a file system without hard links
        if path.exists():
            raise ConfigError(f"{key}={str(path)!r} is not allowed: the file exists") from None
        os.replace(temporary, path)
    else:
        temporary.unlink()


@contextlib.contextmanager
def scratch_dir() -> Iterator[Path]:
    """A private temporary folder for intermediates, removed afterwards."""
    with tempfile.TemporaryDirectory(prefix=STAGING_PREFIX) as folder:
        yield Path(folder)
