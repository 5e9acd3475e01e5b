"""Checkpoint writes that cannot leave a broken file behind.

Lightning writes checkpoints in place: a ``kill -9`` or a full disk mid-write leaves a truncated
``last.ckpt`` and the previous good one is gone. Here every checkpoint is written to a temporary
file in the same folder (``.NAME.tmp-HOST-PID``), flushed to disk, then renamed over the old one
(atomic on POSIX). A ``kill -9`` mid-write leaves that temporary file; the next write into the folder
removes those whose process is gone.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

log = logging.getLogger(__name__)


class CheckpointWriteError(RuntimeError):
    """A checkpoint could not be written; the previous file at that path is intact."""


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` with temporary-file-then-rename writes and a clear error on failure."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        path = Path(path)
        tmp = path.with_name(f".{path.name}.tmp-{socket.gethostname()}-{os.getpid()}")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            remove_stale_temporaries(path.parent)
            with tmp.open("wb") as handle:
                torch.save(checkpoint, handle)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except Exception as err:
            with contextlib.suppress(OSError):  # e.g. a read-only folder: the write error is the one to report
                tmp.unlink(missing_ok=True)
            raise CheckpointWriteError(
                f"could not write checkpoint {str(path)!r} ({err.__class__.__name__}: {err}); "
                "the previous checkpoint there is intact"
            ) from err


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Delete the temporary files that writers on this host left when killed mid-write; return them.

    A file of a live process (another run sharing the folder, or this one) is kept, and so is any
    file written from another host, whose processes cannot be checked from here.
    """
    removed = []
    host = socket.gethostname()
    for tmp in folder.glob(".*.tmp-*"):
        writer = tmp.name.rsplit(".tmp-", 1)[1]
        tmp_host, _, pid = writer.rpartition("-")  # files of older versions: ".NAME.tmp-PID"
        if not pid.isdigit() or tmp_host not in ("", host) or _alive(int(pid)):
            continue
        with contextlib.suppress(OSError):
            tmp.unlink()
            removed.append(tmp)
            log.info("removed %s, left by a process killed while writing a checkpoint", tmp)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True
