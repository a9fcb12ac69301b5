"""The one line a user reads of an error (dimask's own errors are one line already; other
libraries' and re-raised ones are not)."""

from __future__ import annotations

TRACEBACK = "Traceback (most recent call last)"


def one_line(error: BaseException | str) -> str:
    """The line of ``error`` (an exception or its message) a user reads: where the message
    carries a traceback (a DataLoader worker re-raises with the worker's, a submitit job's
    result with the job's), its last line, the original error's own text without its class's
    dotted name; otherwise its first line; the exception type's name where the message is
    empty."""
    text = str(error)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        return type(error).__name__ if isinstance(error, BaseException) else ""
    if TRACEBACK not in text:
        return lines[0]
    head, sep, tail = lines[-1].partition(": ")
    return tail if sep and "." in head and " " not in head else lines[-1]
