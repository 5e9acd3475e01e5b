"""The one atomic file writer: a file is written whole or not at all.

The bytes go to a temporary file beside the target (``.NAME.tmp-HOST-PID``), are flushed to disk
(``fsync``), and the temporary file is renamed over the target (atomic on POSIX, same folder, same
filesystem). A failed write removes its temporary file; a ``kill -9`` mid-write leaves it, and
`remove_stale_temporaries` deletes those whose process is gone. Checkpoints, ``results.json`` and the
benchmark's JSON are written through `atomic_write`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

log = logging.getLogger(__name__)


def atomic_write(path: str | Path, content: bytes | str | Callable[[BinaryIO], object]) -> Path:
    """Write ``content`` (bytes, UTF-8 text, or a function that writes into the open binary file) to ``path``.

    Example:
        >>> import tempfile
        >>> folder = Path(tempfile.mkdtemp())
        >>> atomic_write(folder / "a.json", '{"ok": true}').read_text()
        '{"ok": true}'
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{socket.gethostname()}-{os.getpid()}")
    try:
        with tmp.open("wb") as handle:
            if callable(content):
                content(handle)
            else:
                handle.write(content.encode() if isinstance(content, str) else content)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:  # KeyboardInterrupt too: no temporary file left behind by this process
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise
    return path


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
            log.info("removed %s, left by a process killed while writing it", tmp)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True
