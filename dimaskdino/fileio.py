"""Atomic file writes: a reader (or a killed run) never sees a half-written file."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _atomic(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp's 0600 -> what open() would give
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to a temporary file beside ``path``, then rename it to ``path``."""
    _atomic(Path(path), lambda tmp: Path(tmp).write_text(text))


def atomic_write(path: str | Path, content: str | bytes) -> None:
    """:func:`atomic_write_text` of text, or of bytes."""
    if isinstance(content, bytes):
        _atomic(Path(path), lambda tmp: Path(tmp).write_bytes(content))
    else:
        atomic_write_text(path, content)


def atomic_save(obj, path: str | Path) -> None:
    """``torch.save`` to a temporary file beside ``path``, then rename."""
    _atomic(Path(path), lambda tmp: torch.save(obj, tmp))
