"""Atomic writes: the whole content or nothing, with the permissions open() would give."""

from __future__ import annotations

import os

import pytest

from dimaskdino.fileio import atomic_write_text


def test_atomic_write_text_replaces_whole_files_with_umask_permissions(tmp_path):
    path = tmp_path / "sub" / "report.html"
    atomic_write_text(path, "first")
    atomic_write_text(path, "second")
    assert path.read_text() == "second"
    mask = os.umask(0)
    os.umask(mask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~mask
    assert [p.name for p in path.parent.iterdir()] == ["report.html"]


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "a.txt"
    atomic_write_text(path, "kept")
    with pytest.raises(TypeError):
        atomic_write_text(path, None)
    assert path.read_text() == "kept" and [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_a_full_disk_leaves_the_previous_file_and_names_the_path(tmp_path, monkeypatch):
    import errno

    from dimaskdino import fileio

    path = tmp_path / "a.json"
    fileio.atomic_write_text(path, "good")

    def full(self, text):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(fileio.Path, "write_text", full)
    with pytest.raises(fileio.WriteError) as raised:
        fileio.atomic_write_text(path, "new")
    assert str(raised.value) == (f"cannot write {path}: No space left on device; any "
                                 "previous version of it is left as it was")
    monkeypatch.undo()
    assert path.read_text() == "good" and [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_append_line_adds_a_whole_line_or_nothing(tmp_path, monkeypatch):
    from dimaskdino import fileio

    path = tmp_path / "metrics.jsonl"
    fileio.append_line(path, '{"iteration": 1}')
    write = fileio.os.write
    monkeypatch.setattr(fileio.os, "write", lambda fd, data: write(fd, data[:5]))  # cut short
    with pytest.raises(fileio.WriteError, match="No space left on device"):
        fileio.append_line(path, '{"iteration": 2}')
    monkeypatch.undo()
    fileio.append_line(path, '{"iteration": 3}')
    assert path.read_text() == '{"iteration": 1}\n{"iteration": 3}\n'
