"""The one atomic-write helper: all or nothing, no temporary file left behind, one-line errors."""
from __future__ import annotations

import errno

import pytest

from ebm_vae.utils import atomic
from ebm_vae.utils.atomic import WriteError, atomic_write, write_bytes, write_text


def test_writes_and_replaces(tmp_path):
    target = tmp_path / "sub" / "a.txt"
    write_text(target, "one\n")
    write_text(target, "two\n")
    assert target.read_text() == "two\n"
    write_bytes(tmp_path / "b.bin", b"\x00\x01")
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\x01"
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["a.txt", "b.bin", "sub"]


def test_a_failing_writer_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "ckpt"
    write_bytes(target, b"good")
    with pytest.raises(KeyError):
        with atomic_write(target, "wb") as fh:
            fh.write(b"half")
            raise KeyError("bug in the writer")
    assert target.read_bytes() == b"good"
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]


def test_a_full_disk_is_one_line_and_nothing_is_replaced(tmp_path, monkeypatch):
    target = tmp_path / "ckpt"
    write_bytes(target, b"good")

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(atomic.os, "fsync", full)
    with pytest.raises(WriteError, match=r"cannot write .*ckpt: No space left on device"):
        write_bytes(target, b"new")
    assert target.read_bytes() == b"good"
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]


def test_new_files_get_the_usual_permissions(tmp_path):
    import os
    mask = os.umask(0o022)
    try:
        write_text(tmp_path / "new.txt", "x")
        assert (tmp_path / "new.txt").stat().st_mode & 0o777 == 0o644  # not mkstemp's 0600
        os.chmod(tmp_path / "new.txt", 0o640)
        write_text(tmp_path / "new.txt", "y")  # a replaced file keeps its mode
        assert (tmp_path / "new.txt").stat().st_mode & 0o777 == 0o640
    finally:
        os.umask(mask)
