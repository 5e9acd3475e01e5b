"""The evaluation-check memo: which files of an evaluation folder were unreadable when it was last checked.

Why it exists: an evaluation split (``ImageFolderSplit(check=True)``) decodes every file once at setup, so that
accuracy and "N images" count exactly the images that were read. Two cases would repeat that check on the
same, unchanged folder: the next job of a multirun in the same process, and each DDP rank Lightning launches
(it re-runs the command, and each rank would decode every val/test image again; measured: a launched rank
decoded all 30 images of a test folder, and none with the memo). With the memo, a second check of an unchanged
folder reads only the files found unreadable before: one that reads now (repaired, or a passing I/O error)
is evaluated.

A folder is keyed by a SHA-256 of its path, PIL's pixel limit and, per file, path, size, mtime, ctime, inode
and device: a file added, removed or rewritten (even with its mtime restored, ``cp -p``), or another
``Image.MAX_IMAGE_PIXELS``, gives another key, and the folder is checked in full.

Handing it on: ``app.ddp_job`` puts `checked_folders` (JSON) in an environment variable before Lightning
launches the other ranks, and each launched rank reads it back with `remember_checked_folders`. The
environment because it is all Lightning's launcher carries to a rank it starts; a file in the run dir would
race between nodes sharing the dir and outlive a kill. Anything that is not such JSON is ignored (the rank
then checks the folders itself), and ``app.ddp_job`` hands nothing on above 32 KiB (Windows' limit).

What it does not cover:

- A change the file system's stat does not show (same size, mtime, ctime and inode): such a file is not read
  again; if it became unreadable, its read during evaluation stops the run naming it (``CorruptImageError``).
- Other processes: it lives in this process's memory only. A new command checks again, and so do processes
  started separately (other nodes, SLURM tasks, torchrun), which are not launched by this one.
- The training split: it is never checked up front (an unreadable training file is replaced when read).
- Why a file was unreadable: only the paths are kept; those files are read again, and report their error then.
"""

from __future__ import annotations

import hashlib
import json
import os

# folder key -> the paths of its files that were unreadable at its last check
_CHECKED_FOLDERS: dict[str, list[str]] = {}


def folder_key(root: str, paths: list[str]) -> str:
    """The key of ``root`` holding ``paths``, as they are on disk now (see the module docstring)."""
    from PIL import Image

    digest = hashlib.sha256(f"{root}\0{Image.MAX_IMAGE_PIXELS}".encode("utf-8", "surrogateescape"))
    for path in paths:
        try:
            st = os.stat(path)
            # ctime too: writing a file and restoring its mtime (``cp -p``, ``touch -r``) still changes it
            stamp = f"{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}:{st.st_ino}:{st.st_dev}"
        except OSError:
            stamp = "missing"
        digest.update(f"\0{path}\0{stamp}".encode("utf-8", "surrogateescape"))
    return digest.hexdigest()


def unreadable_at_last_check(key: str) -> list[str] | None:
    """The files found unreadable when the folder with this key was last checked; None: never checked."""
    return _CHECKED_FOLDERS.get(key)


def remember(key: str, unreadable: list[str]) -> None:
    """Record a check of the folder with this key: these files were unreadable, all others read."""
    _CHECKED_FOLDERS[key] = list(unreadable)


def checked_folders() -> str:
    """This process's checks as JSON (``remember_checked_folders`` reads it)."""
    return json.dumps(_CHECKED_FOLDERS)


def remember_checked_folders(text: str) -> None:
    """Take another process's ``checked_folders()``; anything that is not such JSON is ignored (the folders
    are then checked here)."""
    try:
        folders = json.loads(text) if text else {}
    except ValueError:
        return
    if not isinstance(folders, dict):
        return
    for key, unreadable in folders.items():
        if isinstance(unreadable, list) and all(isinstance(path, str) for path in unreadable):
            _CHECKED_FOLDERS[key] = unreadable
