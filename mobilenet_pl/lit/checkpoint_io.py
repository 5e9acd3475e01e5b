"""Checkpoint writes that cannot leave a broken file behind.

Lightning writes checkpoints in place: a ``kill -9`` or a full disk mid-write leaves a truncated
``last.ckpt`` and the previous good one is gone. Here every checkpoint is written to a temporary
file in the same folder, flushed to disk, then renamed over the old one (atomic on POSIX).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO


class CheckpointWriteError(RuntimeError):
    """A checkpoint could not be written; the previous file at that path is intact."""


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` with temporary-file-then-rename writes and a clear error on failure."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        try:
            with tmp.open("wb") as handle:
                torch.save(checkpoint, handle)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except Exception as err:
            tmp.unlink(missing_ok=True)
            raise CheckpointWriteError(
                f"could not write checkpoint {str(path)!r} ({err.__class__.__name__}: {err}); "
                "the previous checkpoint there is intact"
            ) from err
