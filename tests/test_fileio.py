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
