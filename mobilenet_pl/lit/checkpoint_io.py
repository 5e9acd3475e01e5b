"""Checkpoint writes that cannot leave a broken file behind.

A ``kill -9`` or a full disk mid-write must not leave a truncated ``last.ckpt`` in place of the previous
good one: every checkpoint is written by `mobilenet_pl.lit.atomic.atomic_write` (a temporary file beside
it, fsync, rename), and each write first removes the temporary files of writers killed earlier.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from mobilenet_pl.lit.atomic import atomic_write, remove_stale_temporaries

__all__ = ["AtomicCheckpointIO", "CheckpointWriteError", "remove_stale_temporaries"]


class CheckpointWriteError(RuntimeError):
    """A checkpoint could not be written; the previous file at that path is intact."""


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` with writes through a temporary file beside the target and a clear error on failure."""

    # Lightning 2.6 writes through fsspec: a temp file in the system temp folder, then shutil.move (a plain copy when
    # that folder is another filesystem, so not atomic), no fsync, no cleanup of what a kill leaves; ours adds those.
    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        path = Path(path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            remove_stale_temporaries(path.parent)
            atomic_write(path, lambda handle: torch.save(checkpoint, handle))
        except Exception as err:
            raise CheckpointWriteError(
                f"could not write checkpoint {str(path)!r} ({err.__class__.__name__}: {err}); "
                "the previous checkpoint there is intact"
            ) from err
