"""The one atomic writer: whole or not at all, no temporary file left behind by a failed write."""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO

import pytest

from mobilenet_pl.lit.atomic import atomic_write


def test_text_bytes_and_a_writer_function(tmp_path: Path) -> None:
    assert atomic_write(tmp_path / "a.json", '{"x": 1}\n').read_text() == '{"x": 1}\n'
    assert atomic_write(tmp_path / "b.bin", b"\x00\x01").read_bytes() == b"\x00\x01"
    assert atomic_write(tmp_path / "c.bin", lambda f: f.write(b"abc")).read_bytes() == b"abc"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "b.bin", "c.bin"]


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = atomic_write(tmp_path / "results.json", "old")

    def half_then_fail(handle: BinaryIO) -> None:
        handle.write(b"new, half written")
        raise KeyboardInterrupt  # a time limit's SIGINT mid-write

    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, half_then_fail)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]
