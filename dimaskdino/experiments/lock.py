"""One study, one writer: an exclusive lock on a ``run-ablation --out`` folder.

The lock is ``OUT/.dimask.lock``: an ``flock`` held for the whole invocation, which the
kernel releases when the holder ends in any way (SIGKILL and crashes included), and the
holder's host, PID and start time written inside to name it. A second invocation on the
same folder fails at once with :class:`LockedError` naming the holder. A lock file that
still names a holder but whose ``flock`` is free was left by a process that died (it
empties the file when it ends normally): it is taken over, with one line saying whose it
was. The file itself is never deleted, so two processes always lock the same inode.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

LOCK_NAME = ".dimask.lock"


class LockedError(RuntimeError):
    """Another process holds the lock; one-line message naming it."""


def _holder(text: str) -> str:
    """``PID 123 on host h since 2026-12-01 10:00:00 UTC`` from the lock file's text."""
    try:
        info = json.loads(text)
        return f"PID {info['pid']} on {info['host']} since {info['since']}"
    except (ValueError, KeyError, TypeError):
        return "another process"


@contextlib.contextmanager
def exclusive(out: Path, echo: Callable[[str], None]) -> Iterator[Path]:
    """Hold the lock on ``out`` (created if missing) for the block; yields the lock file.

    Raises:
        LockedError: another process holds it.
    """
    out.mkdir(parents=True, exist_ok=True)
    path = out / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise LockedError(f"{out} is in use by {_holder(path.read_text())} (lock "
                              f"{path}); wait for it to end or use another --out") from None
        left = os.pread(fd, 4096, 0).decode(errors="replace").strip()
        if left:
            echo(f"taking over the stale lock {path} of {_holder(left)}, which is no longer "
                 "running")
        since = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
        record = json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "since": since})
        os.ftruncate(fd, 0)
        os.pwrite(fd, record.encode(), 0)
        try:
            yield path
        finally:
            os.ftruncate(fd, 0)
    finally:
        os.close(fd)  # releases the flock
