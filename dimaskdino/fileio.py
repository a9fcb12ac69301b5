"""Atomic file writes: a reader (or a killed run) never sees a half-written file.

Every write goes to a temporary file beside its target and is renamed over it only once
complete, so a full disk (``ENOSPC``), a read-only folder, a crash or a second Ctrl-C leave
the previous version of the file in place; the failure is a :class:`WriteError` naming the
path. Append-only logs (``metrics.jsonl``) use :func:`append_line`, which adds a whole
line or nothing.
"""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path

import torch


class WriteError(OSError):
    """A file could not be written (full disk, read-only folder, no permission); its
    previous version, if any, is untouched. One-line message naming the path."""

    def __str__(self) -> str:
        return str(self.strerror)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _write_error(path: Path, exc: OSError) -> WriteError:
    reason = exc.strerror or str(exc) or type(exc).__name__
    return WriteError(exc.errno, f"cannot write {path}: {reason}; any previous version of "
                                 "it is left as it was")


def _temporary_beside(path: Path) -> str:
    """A new empty file in ``path``'s folder (made if missing), or WriteError."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    except OSError as exc:
        raise _write_error(path, exc) from exc
    os.close(fd)
    return tmp


def _atomic(path: Path, write) -> None:
    tmp = _temporary_beside(path)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp's 0600 -> what open() would give
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise _write_error(path, exc) from exc
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


def append_line(path: str | Path, line: str) -> None:
    """Append ``line`` and a newline to ``path`` in one write; on a failure (or a short
    write) the file is cut back to its previous length, so it never ends in half a line."""
    path = Path(path)
    data = (line + "\n").encode()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    except OSError as exc:
        raise _write_error(path, exc) from exc
    try:
        size = os.fstat(fd).st_size
        try:
            if os.write(fd, data) != len(data):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # filled up mid-line
        except OSError as exc:
            os.ftruncate(fd, size)
            raise _write_error(path, exc) from exc
    finally:
        os.close(fd)


def check_writable(path: str | Path) -> None:
    """WriteError now, before any work, where ``path`` could not be written later (its
    folder cannot be made, or takes no new file)."""
    Path(_temporary_beside(Path(path))).unlink()
